"""The forwarding core on plain bytes: no aiortc, no NATS."""

import itertools
import random
import struct

from services.media.forwarding import rtcp
from services.media.forwarding.codecs import Codec, match_codec
from services.media.forwarding.forwarder import Leg, Source, Uplink
from services.media.forwarding.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    ExtensionMap,
    build_extensions,
    is_keyframe_start,
    parse_header,
    seq_diff,
)
from services.media.forwarding.slots import SlotMap, Track

VP8_IN = Codec("VP8", 90000, 96)
VP8_OUT = Codec("VP8", 90000, 120)
OPUS_IN = Codec("opus", 48000, 111, 2)
OPUS_OUT = Codec("opus", 48000, 109, 2)
PUB_EXT = ExtensionMap({URI_MID: 4, URI_ABS_SEND_TIME: 2, URI_AUDIO_LEVEL: 1})
SUB_EXT = ExtensionMap({URI_MID: 9, URI_ABS_SEND_TIME: 3})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def vp8_payload(key: bool, start: bool = True) -> bytes:
    desc = 0x10 if start else 0x00  # S bit, partition 0
    return bytes([desc, 0x00 if key else 0x01]) + bytes(range(40))


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, mid: str = "1", marker=False):
    ext = build_extensions([(4, mid.encode()), (2, b"\x01\x02\x03"), (1, b"\x80")])
    b0 = 0x90
    return struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq, ts, ssrc) + ext + payload


class Sink:
    """An in-memory subscriber: records what arrives, optionally dropping some."""

    def __init__(self, loss: float = 0.0, seed: int = 1) -> None:
        self.packets: list[bytes] = []
        self.loss = loss
        self.rng = random.Random(seed)
        self.dropped = 0

    async def __call__(self, data: bytes) -> None:
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.packets.append(data)

    def seqs(self) -> list[int]:
        return [parse_header(p).seq for p in self.packets]


def make_source(clock: Clock, kind: str = "video", requests: list[str] | None = None) -> Source:
    codecs = [OPUS_IN] if kind == "audio" else [VP8_IN]
    log = requests if requests is not None else []
    return Source(
        f"p1_{kind}", kind, codecs, PUB_EXT, clock=clock,
        on_keyframe_request=lambda s: log.append(s.track_id),
    )  # fmt: skip


async def test_rewrites_header_and_extensions_per_leg() -> None:
    clock = Clock()
    source = make_source(clock)
    sink = Sink()
    leg = Leg(0xABCD, "video", [VP8_OUT], SUB_EXT, sink, mid="7", clock=clock)
    leg.attach(source)
    await source.on_rtp(rtp(96, 1000, 5000, 0x1111, vp8_payload(True), marker=True))
    await source.on_rtp(rtp(96, 1001, 8000, 0x1111, vp8_payload(False)))
    assert len(sink.packets) == 2
    a, b = (parse_header(p) for p in sink.packets)
    assert (a.ssrc, a.payload_type, a.marker) == (0xABCD, 120, True)
    assert seq_diff(b.seq, a.seq) == 1
    assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 3000
    # mid rewritten to the leg's own, abs-send-time renumbered, audio level dropped
    assert dict(a.extensions) == {9: b"7", 3: b"\x01\x02\x03"}
    assert sink.packets[0].endswith(vp8_payload(True))


async def test_strips_extensions_the_leg_did_not_negotiate() -> None:
    clock = Clock()
    source = make_source(clock)
    sink = Sink()
    leg = Leg(5, "video", [VP8_OUT], ExtensionMap({}), sink, clock=clock)
    leg.attach(source)
    await source.on_rtp(rtp(96, 1, 1, 1, vp8_payload(True)))
    out = sink.packets[0]
    assert out[0] & 0x10 == 0 and parse_header(out).extensions == []
    assert out[12:] == vp8_payload(True)


async def test_video_leg_waits_for_keyframe_and_asks_for_one() -> None:
    clock = Clock()
    asked: list[str] = []
    source = make_source(clock, requests=asked)
    sink = Sink()
    leg = Leg(5, "video", [VP8_OUT], SUB_EXT, sink, clock=clock)
    leg.attach(source)
    assert asked == ["p1_video"]  # attaching asks at once
    await source.on_rtp(rtp(96, 1, 1, 1, vp8_payload(False)))
    assert sink.packets == []
    clock.now += 0.1
    await source.on_rtp(rtp(96, 2, 1, 1, vp8_payload(False)))
    assert asked == ["p1_video"]  # throttled
    clock.now += 0.3
    await source.on_rtp(rtp(96, 3, 1, 1, vp8_payload(False)))
    assert asked == ["p1_video"] * 2
    await source.on_rtp(rtp(96, 4, 2, 1, vp8_payload(True)))
    assert len(sink.packets) == 1


async def test_keyframe_requests_from_many_subscribers_are_throttled() -> None:
    clock = Clock()
    asked: list[str] = []
    source = make_source(clock, requests=asked)
    legs = [Leg(i, "video", [VP8_OUT], SUB_EXT, Sink(), clock=clock) for i in range(1, 51)]
    for leg in legs:
        leg.attach(source)
    asked.clear()
    clock.now += 1
    for leg in legs:
        leg.on_keyframe_request()
    assert asked == ["p1_video"]
    # audio sources never ask
    audio = make_source(clock, "audio", asked)
    assert not audio.request_keyframe(force=True)


async def test_slot_switch_keeps_sequence_and_timestamp_continuous() -> None:
    clock = Clock()
    a, b = make_source(clock), make_source(clock)
    b.track_id = "p2_video"
    sink = Sink()
    leg = Leg(5, "video", [VP8_OUT], SUB_EXT, sink, clock=clock)
    leg.attach(a)
    for i in range(5):
        await a.on_rtp(rtp(96, 100 + i, 9000 * i, 1, vp8_payload(i == 0)))
        clock.now += 0.1
    leg.attach(b)
    await a.on_rtp(rtp(96, 105, 45000, 1, vp8_payload(False)))  # no longer forwarded
    await b.on_rtp(rtp(96, 60000, 123456, 2, vp8_payload(True)))
    await b.on_rtp(rtp(96, 60001, 126456, 2, vp8_payload(False)))
    headers = [parse_header(p) for p in sink.packets]
    assert len(headers) == 7
    for prev, cur in itertools.pairwise(headers):
        assert seq_diff(cur.seq, prev.seq) == 1
        assert 0 < (cur.timestamp - prev.timestamp) & 0xFFFFFFFF < 90000
    assert {h.ssrc for h in headers} == {5}


async def test_mute_stops_forwarding_and_unmute_resumes_contiguously() -> None:
    clock = Clock()
    source = make_source(clock)
    sink = Sink()
    leg = Leg(5, "video", [VP8_OUT], SUB_EXT, sink, clock=clock)
    leg.attach(source)
    await source.on_rtp(rtp(96, 1, 0, 1, vp8_payload(True)))
    source.set_muted(True)
    for i in range(2, 50):
        await source.on_rtp(rtp(96, i, i * 3000, 1, vp8_payload(False)))
    assert len(sink.packets) == 1
    source.set_muted(False)
    await source.on_rtp(rtp(96, 50, 150000, 1, vp8_payload(False)))
    await source.on_rtp(rtp(96, 51, 153000, 1, vp8_payload(True)))
    assert len(sink.packets) == 2
    first, second = (parse_header(p) for p in sink.packets)
    assert seq_diff(second.seq, first.seq) == 1  # no gap the viewer would NACK


async def test_five_percent_loss_recovered_by_nacks() -> None:
    clock = Clock()
    source = make_source(clock)
    sink = Sink(loss=0.05, seed=7)
    leg = Leg(5, "video", [VP8_OUT], SUB_EXT, sink, clock=clock)
    leg.attach(source)
    for i in range(2000):
        await source.on_rtp(rtp(96, (65000 + i) & 0xFFFF, i * 900, 1, vp8_payload(i == 0)))
        if i % 50 == 49:  # the viewer's NACK round, as a real receiver sends it
            got = set(sink.seqs())
            first = leg._epoch_start
            expected = {(first + k) & 0xFFFF for k in range(i + 1)}
            missing = sorted(expected - got)
            if missing:
                nack = rtcp.build_nack(99, leg.ssrc, missing)
                (packet,) = rtcp.parse_compound(nack)
                sink.loss = 0.0
                await leg.on_nack(rtcp.parse_nack(packet))
                sink.loss = 0.05
    assert sink.dropped > 50
    assert len(set(sink.seqs())) == 2000
    assert leg.retransmitted >= sink.dropped - 5


async def test_nack_ignores_packets_from_before_a_switch() -> None:
    clock = Clock()
    a, b = make_source(clock), make_source(clock)
    sink = Sink()
    leg = Leg(5, "video", [VP8_OUT], SUB_EXT, sink, clock=clock)
    leg.attach(a)
    await a.on_rtp(rtp(96, 10, 0, 1, vp8_payload(True)))
    old = parse_header(sink.packets[0]).seq
    leg.attach(b)
    await b.on_rtp(rtp(96, 500, 0, 2, vp8_payload(True)))
    assert await leg.on_nack([old]) == 0


async def test_sender_report_follows_publisher_clock_and_leg_offset() -> None:
    clock = Clock()
    source = make_source(clock)
    sink = Sink()
    leg = Leg(5, "video", [VP8_OUT], SUB_EXT, sink, clock=clock)
    leg.attach(source)
    assert leg.sender_report() is None
    await source.on_rtp(rtp(96, 1, 90000, 1, vp8_payload(True)))
    out_ts = parse_header(sink.packets[0]).timestamp
    ntp = rtcp.ntp_from_unix(1_700_000_000.0)
    source.on_sender_report(rtcp.SenderInfo(ntp, 90000, 1, 100))
    clock.now += 0.5
    (sr,) = rtcp.parse_compound(leg.sender_report() or b"")
    info = rtcp.parse_sender_info(sr)
    assert sr.packet_type == rtcp.SR and sr.sender_ssrc == 5
    assert abs(((info.ntp - ntp) / 2**32) - 0.5) < 1e-6
    assert (info.rtp - out_ts) & 0xFFFFFFFF == 45000
    assert info.packets == 1


async def test_uplink_demuxes_and_writes_rr_and_remb() -> None:
    clock = Clock()
    video, audio = make_source(clock), make_source(clock, "audio")
    uplink = Uplink(PUB_EXT, feedback_ssrc=77)
    uplink.add(video, ssrcs=[], mid="1")
    uplink.add(audio, ssrcs=[0x2222], mid="0")
    await uplink.on_rtp(rtp(96, 1, 0, 0x1111, vp8_payload(True), mid="1"))
    await uplink.on_rtp(rtp(96, 3, 0, 0x1111, vp8_payload(False), mid="1"))  # 2 lost
    await uplink.on_rtp(rtp(111, 1, 0, 0x2222, b"\x01\x02", mid="0"))
    assert video.ssrc == 0x1111 and audio.received == 1
    uplink.on_rtcp(rtcp.build_sr(0x1111, rtcp.SenderInfo(1 << 40, 0, 2, 10)))
    assert video.sr is not None
    leg = Leg(5, "video", [VP8_OUT], SUB_EXT, Sink(), clock=clock)
    leg.attach(video)
    leg.on_remb(50_000)  # a weak viewer does not drag everyone below the floor
    packets = rtcp.parse_compound(uplink.feedback(remb_floor=300_000, remb_cap=2_000_000))
    rr, remb = packets
    blocks = {b.ssrc: b for b in rtcp.parse_report_blocks(rr)}
    assert rr.sender_ssrc == 77 and blocks[0x1111].cumulative_lost == 1
    assert blocks[0x1111].lsr == ((1 << 40) >> 16) & 0xFFFFFFFF
    assert rtcp.parse_remb(remb) == (300_000, [0x1111])


def test_codec_matching_uses_h264_fmtp() -> None:
    src = Codec("H264", 90000, 102, params={"profile-level-id": "42e01f",
                                              "packetization-mode": "1"})  # fmt: skip
    offered = [
        Codec("H264", 90000, 100, params={"profile-level-id": "42e01f", "packetization-mode": "0"}),
        Codec("H264", 90000, 101, params={"profile-level-id": "640c1f", "packetization-mode": "1"}),
        Codec("H264", 90000, 104, params={"profile-level-id": "42e034", "packetization-mode": "1"}),
    ]
    assert match_codec(src, offered) == offered[2]
    assert match_codec(src, offered[:2]) is None
    assert match_codec(OPUS_IN, [Codec("rtx", 90000, 97), OPUS_OUT]) == OPUS_OUT


def test_keyframe_detection() -> None:
    assert is_keyframe_start("VP8", vp8_payload(True))
    assert not is_keyframe_start("VP8", vp8_payload(False))
    assert not is_keyframe_start("VP8", vp8_payload(True, start=False))
    # VP8 with extended descriptor: X, I (15-bit picture id)
    assert is_keyframe_start("VP8", bytes([0x90, 0x80, 0x81, 0x23, 0x00]))
    assert is_keyframe_start("H264", bytes([0x65, 0x00]))  # IDR
    assert is_keyframe_start("H264", bytes([0x18, 0x00, 0x02, 0x67, 0x42]))  # STAP-A SPS
    assert is_keyframe_start("H264", bytes([0x7C, 0x85]))  # FU-A start of IDR
    assert not is_keyframe_start("H264", bytes([0x7C, 0x05]))
    assert not is_keyframe_start("H264", bytes([0x41]))
    assert is_keyframe_start("opus", b"\x01")


def test_slot_map_is_stable() -> None:
    slots = SlotMap(2, 2, 1)
    alice_v, bob_v, carol_v = (Track(f"{p}_video", p, "video") for p in ("a", "b", "c"))
    alice_a = Track("a_audio", "a", "audio")
    screen = Track("a_screen", "a", "screen")
    assert slots.assign([alice_a, alice_v, bob_v, screen]) == [0, 2, 3, 4]
    assert slots.assign([alice_a, bob_v, carol_v, screen]) == [2]  # carol takes alice's
    assert slots.index_of("b_video") == 3
    public = slots.to_public()
    assert public["2"] == {"participant_id": "c", "kind": "video"}
    assert public["1"] is None
    assert slots.assign([]) == [0, 2, 3, 4]


async def test_uplink_loss_is_nacked_and_repaired_from_rtx() -> None:
    clock = Clock()
    lost: list[list[int]] = []
    rtx = Codec("rtx", 90000, 97, params={"apt": "96"})
    source = Source("p1_video", "video", [VP8_IN, rtx], PUB_EXT, clock=clock,
                    on_loss=lambda s, seqs: lost.append(seqs))  # fmt: skip
    sink = Sink()
    leg = Leg(5, "video", [VP8_OUT], SUB_EXT, sink, clock=clock)
    leg.attach(source)
    await source.on_rtp(rtp(96, 100, 0, 0x1111, vp8_payload(True)))
    await source.on_rtp(rtp(96, 101, 0, 0x1111, vp8_payload(False, start=False)))
    await source.on_rtp(rtp(96, 103, 3000, 0x1111, vp8_payload(False)))
    assert lost == [[102]]
    # the publisher answers on its RTX stream: OSN, then the original payload
    missing = vp8_payload(False, start=False)
    await source.on_rtp(rtp(97, 7, 0, 0x2222, struct.pack("!H", 102) + missing))
    await source.on_rtp(rtp(96, 103, 3000, 0x1111, vp8_payload(False)))  # duplicate: dropped
    headers = [parse_header(p) for p in sink.packets]
    assert len(headers) == 4 and source.recovered == 1
    assert sink.packets[-1].endswith(missing)
    assert {h.ssrc for h in headers} == {5} and {h.payload_type for h in headers} == {120}
    first = headers[0].seq
    assert sorted(seq_diff(h.seq, first) for h in headers) == [0, 1, 2, 3]
