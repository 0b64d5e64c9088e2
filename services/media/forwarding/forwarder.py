"""Sources (one published track) and legs (one subscriber slot): the packet path.

A `Source` receives a track's RTP as bytes, keeps its retransmission history and its
receive statistics, and hands each packet to the legs attached to it. A `Leg` rewrites
SSRC, sequence number, timestamp, payload type and header extensions for its
subscriber, keeps both numbering spaces continuous when it switches source, answers
NACKs from the source's history and derives sender reports from the source's.
"""

import random
import struct
import time
from collections.abc import Awaitable, Callable

from services.media.forwarding import rtcp
from services.media.forwarding.codecs import Codec, match_codec
from services.media.forwarding.history import History
from services.media.forwarding.rtp import (
    ExtensionMap,
    RtpHeader,
    build_extensions,
    is_keyframe_start,
    pack_fixed,
    parse_header,
    seq_diff,
    translate_extensions,
)

SendFn = Callable[[bytes], Awaitable[None]]
SendNow = Callable[[bytes], None]
Clock = Callable[[], float]
REMB_MAX_AGE = 5.0
MAX_NACK_GAP = 64  # a bigger hole is cheaper to repair with a keyframe


class Packet:
    """One inbound packet, parsed once, shared by every leg."""

    __slots__ = ("_keyframe", "codec", "data", "header", "rest")

    def __init__(self, data: bytes, header: RtpHeader, codec: Codec) -> None:
        self.data = data
        self.header = header
        self.codec = codec
        self._keyframe: bool | None = None
        # rewritten tail (csrc + extensions + payload) by leg extension profile
        self.rest: dict[tuple[object, ...], tuple[bytes, int]] = {}

    @property
    def keyframe(self) -> bool:
        if self._keyframe is None:
            self._keyframe = is_keyframe_start(
                self.codec.name, self.data[self.header.payload_offset :]
            )
        return self._keyframe


class Source:
    """One published track (audio, camera or screen) on this node."""

    def __init__(
        self,
        track_id: str,
        kind: str,
        codecs: list[Codec],
        extensions: ExtensionMap,
        *,
        history_size: int = 1024,
        keyframe_interval: float = 0.3,
        on_keyframe_request: Callable[["Source"], None] | None = None,
        on_first_packet: Callable[["Source"], None] | None = None,
        on_loss: Callable[["Source", list[int]], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.track_id = track_id
        self.kind = kind  # audio | video | screen
        self.codecs = {c.payload_type: c for c in codecs if not c.is_rtx}
        # RTX payload type -> the payload type it retransmits (RFC 4588)
        self.rtx_apt = {
            c.payload_type: int(c.params["apt"])
            for c in codecs
            if c.is_rtx and str(c.params.get("apt", "")).isdigit()
        }
        self.extensions = extensions
        self.history = History(history_size)
        self.legs: list[Leg] = []
        self.muted = False
        self.epoch = 0  # bumped on unmute: legs re-base and wait for a keyframe
        self.ssrc: int | None = None
        self.keyframe_interval = keyframe_interval
        self.on_keyframe_request = on_keyframe_request
        self.on_first_packet = on_first_packet
        self.on_loss = on_loss  # sequence numbers the uplink lost: NACK them upstream
        self.recovered = 0
        # copies of every forwarded packet (relay to other nodes), unless muted
        self.relay: SendFn | None = None
        self._clock = clock
        self._last_keyframe_request = -1e9
        self.keyframe_requests = 0
        self.sr: tuple[rtcp.SenderInfo, float] | None = None
        self._rembs: dict[int, tuple[int, float]] = {}
        # receive statistics (RFC 3550 A.1, A.3, A.8)
        self.received = 0
        self.forwarded = 0
        self._base_seq: int | None = None
        self._max_seq = 0
        self._cycles = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._transit: float | None = None

    @property
    def is_video(self) -> bool:
        return self.kind != "audio"

    def codec(self) -> Codec | None:
        return next(iter(self.codecs.values()), None)

    # --- inbound ----------------------------------------------------------------------

    async def on_rtp(self, data: bytes, arrival: float | None = None) -> None:
        try:
            header = parse_header(data)
        except ValueError:
            return
        codec = self.codecs.get(header.payload_type)
        if codec is None:
            apt = self.rtx_apt.get(header.payload_type)
            if apt is None or self.ssrc is None:
                return
            unwrapped = self._unwrap_rtx(data, header, apt)
            if unwrapped is None:
                return
            data, header = unwrapped
            codec = self.codecs.get(apt)
            if codec is None:
                return
            self.recovered += 1
        elif header.ssrc != self.ssrc:
            self.ssrc = header.ssrc
        if self.history.get(header.seq) is not None:
            return  # a duplicate (or a retransmission we already had)
        self._update_stats(header, codec, self._clock() if arrival is None else arrival)
        self.history.put(header.seq, data)
        if self.received == 1 and self.on_first_packet is not None:
            self.on_first_packet(self)
        if self.muted:
            return
        if self.relay is not None:
            await self.relay(data)
        if not self.legs:
            return
        packet = Packet(data, header, codec)
        self.forwarded += 1
        for leg in tuple(self.legs):
            out = leg.prepare(packet)
            if out is not None:
                if leg.send_now is not None:
                    leg.send_now(out)
                else:
                    await leg.send(out)

    def on_sender_report(self, info: rtcp.SenderInfo, arrival: float | None = None) -> None:
        self.sr = (info, self._clock() if arrival is None else arrival)

    def _unwrap_rtx(self, data: bytes, h: RtpHeader, apt: int) -> tuple[bytes, RtpHeader] | None:
        """The original packet inside an RTX one: OSN first, then the payload."""
        if len(data) < h.payload_offset + 2 or self.ssrc is None:
            return None
        osn = struct.unpack_from("!H", data, h.payload_offset)[0]
        fixed = pack_fixed(data[0], (data[1] & 0x80) | apt, osn, h.timestamp, self.ssrc)
        original = fixed + data[12 : h.payload_offset] + data[h.payload_offset + 2 :]
        try:
            return original, parse_header(original)
        except ValueError:
            return None

    def _update_stats(self, h: RtpHeader, codec: Codec, arrival: float) -> None:
        self.received += 1
        if self._base_seq is None:
            self._base_seq = self._max_seq = h.seq
        else:
            delta = seq_diff(h.seq, self._max_seq)
            if delta > 0:
                if 1 < delta <= MAX_NACK_GAP and self.on_loss is not None:
                    self.on_loss(self, [(self._max_seq + i) & 0xFFFF for i in range(1, delta)])
                elif delta > MAX_NACK_GAP:
                    # A hole nobody will fill (an edge gets nothing from its origin while
                    # the track is muted): legs re-base at the next keyframe, so that
                    # their subscribers see no gap to wait for (aiortc's jitter buffer
                    # stalls on one until 512 packets later).
                    self.epoch += 1
                if h.seq < self._max_seq:
                    self._cycles += 1 << 16
                self._max_seq = h.seq
        transit = arrival * codec.clock_rate - h.timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < codec.clock_rate * 10:  # ignore timestamp jumps
                self._jitter += (d - self._jitter) / 16
        self._transit = transit

    # --- control ----------------------------------------------------------------------

    def set_muted(self, muted: bool) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        if not muted:
            self.epoch += 1
            self.request_keyframe(force=True)

    def request_keyframe(self, force: bool = False) -> bool:
        """Ask the uplink for a keyframe, at most once per `keyframe_interval`."""
        if not self.is_video or self.on_keyframe_request is None:
            return False
        now = self._clock()
        if not force and now - self._last_keyframe_request < self.keyframe_interval:
            return False
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        self.on_keyframe_request(self)
        return True

    def on_remb(self, leg: "Leg", bitrate: int) -> None:
        self._rembs[id(leg)] = (bitrate, self._clock())

    def remb_estimate(self, floor: int, cap: int) -> int:
        """The minimum of the subscribers' recent estimates, kept within [floor, cap]."""
        now = self._clock()
        recent = [b for b, t in self._rembs.values() if now - t < REMB_MAX_AGE]
        if not recent:
            return cap
        return min(cap, max(floor, min(recent)))

    def report_block(self) -> rtcp.ReportBlock | None:
        if self.ssrc is None or self._base_seq is None:
            return None
        extended = self._cycles + self._max_seq
        expected = extended - self._base_seq + 1
        lost = expected - self.received
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        lsr = dlsr = 0
        if self.sr is not None:
            info, arrived = self.sr
            lsr = (info.ntp >> 16) & 0xFFFFFFFF
            dlsr = int((self._clock() - arrived) * 65536)
        return rtcp.ReportBlock(self.ssrc, fraction, lost, extended, int(self._jitter), lsr, dlsr)


class Leg:
    """One subscriber slot: an outgoing SSRC fed by at most one source at a time."""

    def __init__(
        self,
        ssrc: int,
        kind: str,
        codecs: list[Codec],
        extensions: ExtensionMap,
        send: SendFn,
        *,
        mid: str | None = None,
        send_now: SendNow | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.ssrc = ssrc
        self.kind = kind  # audio | video (camera and screen slots are video legs)
        self.codecs = codecs
        self.extensions = extensions
        self.mid = mid
        self.send = send
        # optional synchronous fast path (no coroutine per packet); `send` otherwise
        self.send_now = send_now
        self._clock = clock
        self._ext_key = (extensions.key(), mid)
        self.source: Source | None = None
        self._pt_map: dict[int, int] = {}  # source payload type -> this leg's
        self._clock_rate = 90000
        self._epoch = -1  # source epoch the offsets belong to; -1: re-base first
        self._seq_off = 0
        self._ts_off = 0
        self._epoch_start = 0
        self.last_seq: int | None = None
        self._last_ts = 0
        self._last_time = 0.0
        self.packets = 0
        self.octets = 0
        self.nacks = 0
        self.retransmitted = 0
        self.keyframe_requests = 0

    def attach(self, source: Source | None) -> None:
        """Switch to another source (or none): no renegotiation, only a keyframe."""
        if source is self.source:
            return
        if self.source is not None and self in self.source.legs:
            self.source.legs.remove(self)
        self.source = source
        self._epoch = -1
        self._pt_map = {}
        if source is None:
            return
        for pt, codec in source.codecs.items():
            match = match_codec(codec, self.codecs)
            if match is not None:
                self._pt_map[pt] = match.payload_type
                self._clock_rate = match.clock_rate
        if not self._pt_map:  # no codec in common: this viewer cannot take the track
            self.source = None
            return
        source.legs.append(self)
        # throttled: a crowd joining at once costs the publisher one keyframe
        source.request_keyframe()

    def detach(self) -> None:
        self.attach(None)

    def _rebase(self, h: RtpHeader) -> None:
        now = self._clock()
        if self.last_seq is None:
            next_seq = random.randint(0, 0x7FFF)
            next_ts = random.getrandbits(32)
        else:
            next_seq = (self.last_seq + 1) & 0xFFFF
            gap = max(1, int((now - self._last_time) * self._clock_rate))
            next_ts = (self._last_ts + gap) & 0xFFFFFFFF
        self._seq_off = (next_seq - h.seq) & 0xFFFF
        self._ts_off = (next_ts - h.timestamp) & 0xFFFFFFFF
        self._epoch_start = next_seq
        self.last_seq = None
        self._last_time = now

    async def forward(self, packet: Packet, retransmission: bool = False) -> None:
        out = self.prepare(packet, retransmission)
        if out is not None:
            if self.send_now is not None:
                self.send_now(out)
            else:
                await self.send(out)

    def prepare(self, packet: Packet, retransmission: bool = False) -> bytes | None:
        """The packet as this leg's subscriber must get it, or None to skip it."""
        source = self.source
        h = packet.header
        payload_type = self._pt_map.get(h.payload_type)
        if source is None or payload_type is None:
            return None
        if not retransmission and self._epoch != source.epoch:
            if self.kind != "audio" and not packet.keyframe:
                source.request_keyframe()
                return None
            self._rebase(h)
            self._epoch = source.epoch
        cached = packet.rest.get(self._ext_key)
        if cached is None:
            cached = self._rewrite_tail(packet, source.extensions)
            packet.rest[self._ext_key] = cached
        rest, ext_bit = cached
        seq = (h.seq + self._seq_off) & 0xFFFF
        ts = (h.timestamp + self._ts_off) & 0xFFFFFFFF
        b0 = (packet.data[0] & 0xEF) | ext_bit
        b1 = (0x80 if h.marker else 0) | payload_type
        out = pack_fixed(b0, b1, seq, ts, self.ssrc) + rest
        if not retransmission:
            if self.last_seq is None or seq_diff(seq, self.last_seq) > 0:
                self.last_seq = seq
                self._last_ts = ts
                self._last_time = self._clock()
            self.packets += 1
            self.octets += len(out) - h.payload_offset
        return out

    def _rewrite_tail(self, packet: Packet, src_ext: ExtensionMap) -> tuple[bytes, int]:
        h = packet.header
        data = packet.data
        items = translate_extensions(h.extensions, src_ext, self.extensions, self.mid)
        block = build_extensions(items)
        return data[12 : h.csrc_end] + block + data[h.payload_offset :], 0x10 if block else 0

    # --- feedback from the subscriber -------------------------------------------------

    async def on_nack(self, lost: list[int]) -> int:
        """Resend what the history still holds; returns how many were resent."""
        source = self.source
        self.nacks += 1
        if source is None or self.last_seq is None or self._epoch != source.epoch:
            return 0
        resent = 0
        for seq in lost:
            if seq_diff(seq, self._epoch_start) < 0 or seq_diff(seq, self.last_seq) > 0:
                continue
            data = source.history.get((seq - self._seq_off) & 0xFFFF)
            if data is None:
                continue
            header = parse_header(data)
            codec = source.codecs.get(header.payload_type)
            if codec is None:
                continue
            await self.forward(Packet(data, header, codec), retransmission=True)
            resent += 1
        self.retransmitted += resent
        return resent

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if self.source is not None:
            self.source.request_keyframe()

    def on_remb(self, bitrate: int) -> None:
        if self.source is not None:
            self.source.on_remb(self, bitrate)

    def sender_report(self) -> bytes | None:
        """An SR whose NTP/RTP pair is the source's, shifted by this leg's timestamp
        offset and extrapolated to now; None until both are known."""
        source = self.source
        if source is None or source.sr is None or self.last_seq is None:
            return None
        if self._epoch != source.epoch:
            return None
        info, arrived = source.sr
        elapsed = self._clock() - arrived
        ntp = info.ntp + int(elapsed * (1 << 32))
        rtp_ts = (info.rtp + int(elapsed * self._clock_rate) + self._ts_off) & 0xFFFFFFFF
        return rtcp.build_sr(self.ssrc, rtcp.SenderInfo(ntp, rtp_ts, self.packets, self.octets))


class Uplink:
    """A publisher connection's tracks: demultiplexes its RTP and RTCP by SSRC or mid,
    and writes the receiver reports and REMB it must get back."""

    def __init__(self, extensions: ExtensionMap, *, feedback_ssrc: int | None = None) -> None:
        self.extensions = extensions
        self.by_ssrc: dict[int, Source] = {}
        self.by_mid: dict[str, Source] = {}
        self.sources: list[Source] = []
        self.feedback_ssrc = feedback_ssrc or random.getrandbits(32) or 1
        self._mid_id = extensions.by_uri.get("urn:ietf:params:rtp-hdrext:sdes:mid")

    def add(self, source: Source, *, ssrcs: list[int], mid: str | None) -> None:
        self.sources.append(source)
        for ssrc in ssrcs:
            self.by_ssrc[ssrc] = source
        if mid is not None:
            self.by_mid[mid] = source

    async def on_rtp(self, data: bytes, arrival: float | None = None) -> None:
        if len(data) < 12:
            return
        ssrc = struct.unpack_from("!I", data, 8)[0]
        source = self.by_ssrc.get(ssrc)
        if source is None:
            source = self._learn(data, ssrc)
            if source is None:
                return
        await source.on_rtp(data, arrival)

    def _learn(self, data: bytes, ssrc: int) -> Source | None:
        try:
            header = parse_header(data)
        except ValueError:
            return None
        for ext_id, value in header.extensions:
            if ext_id == self._mid_id:
                source = self.by_mid.get(value.decode(errors="replace"))
                if source is None:
                    continue
                pt = header.payload_type
                if pt in source.codecs or pt in source.rtx_apt:
                    self.by_ssrc[ssrc] = source
                    return source
        return None

    def on_rtcp(self, data: bytes, arrival: float | None = None) -> None:
        for packet in rtcp.parse_compound(data):
            if packet.packet_type == rtcp.SR and len(packet.body) >= 24:
                source = self.by_ssrc.get(packet.sender_ssrc)
                if source is not None:
                    source.on_sender_report(rtcp.parse_sender_info(packet), arrival)

    def feedback(self, remb_floor: int, remb_cap: int) -> bytes:
        """RR for every source with packets, then REMB for the video ones."""
        blocks = [b for b in (s.report_block() for s in self.sources) if b is not None]
        out = rtcp.build_rr(self.feedback_ssrc, blocks)
        video = [s for s in self.sources if s.is_video and s.ssrc is not None]
        if video:
            bitrate = sum(s.remb_estimate(remb_floor, remb_cap) for s in video)
            ssrcs = [s.ssrc for s in video if s.ssrc is not None]
            out += rtcp.build_remb(self.feedback_ssrc, bitrate, ssrcs)
        return out
