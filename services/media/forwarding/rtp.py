"""RTP header parsing and per-leg rewriting of the header and its extensions."""

import struct
from dataclasses import dataclass

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
# Never forwarded: its sequence numbers belong to the publisher's transport.
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

_FIXED = struct.Struct("!BBHII")


@dataclass(slots=True)
class RtpHeader:
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    csrc_end: int  # offset where the extension block (or payload) starts
    payload_offset: int
    # (id, value) in wire order; empty when the packet carries none
    extensions: list[tuple[int, bytes]]


def is_rtcp(data: bytes) -> bool:
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_header(data: bytes) -> RtpHeader:
    """Parse an RTP header; raises ValueError on a malformed packet."""
    if len(data) < 12 or data[0] >> 6 != 2:
        raise ValueError("not an RTP packet")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    pos = 12 + 4 * (b0 & 0x0F)
    csrc_end = pos
    extensions: list[tuple[int, bytes]] = []
    if b0 & 0x10:
        if len(data) < pos + 4:
            raise ValueError("truncated extension header")
        profile, length = struct.unpack_from("!HH", data, pos)
        start = pos + 4
        end = start + 4 * length
        if len(data) < end:
            raise ValueError("truncated extension")
        extensions = _parse_extensions(profile, data[start:end])
        pos = end
    if pos > len(data):
        raise ValueError("truncated packet")
    return RtpHeader(bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, csrc_end, pos, extensions)


def _parse_extensions(profile: int, block: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(block)
    if profile == 0xBEDE:
        while i < n:
            b = block[i]
            if b == 0:
                i += 1
                continue
            ext_id, length = b >> 4, (b & 0x0F) + 1
            if ext_id == 15:
                break
            out.append((ext_id, block[i + 1 : i + 1 + length]))
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i + 1 < n:
            ext_id = block[i]
            if ext_id == 0:
                i += 1
                continue
            length = block[i + 1]
            out.append((ext_id, block[i + 2 : i + 2 + length]))
            i += 2 + length
    return out


def build_extensions(items: list[tuple[int, bytes]]) -> bytes:
    """The extension block (profile + length + elements, padded) or b"" if empty."""
    if not items:
        return b""
    one_byte = all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in items)
    if one_byte:
        body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in items)
        profile = 0xBEDE
    else:
        body = b"".join(bytes([i, len(v)]) + v for i, v in items)
        profile = 0x1000
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", profile, len(body) // 4) + body


class ExtensionMap:
    """A leg's negotiated header extensions: uri <-> id."""

    def __init__(self, ids: dict[str, int]) -> None:
        self.by_uri = dict(ids)
        self.by_id = {v: k for k, v in ids.items()}

    def key(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.by_uri.items()))


def translate_extensions(
    items: list[tuple[int, bytes]], src: ExtensionMap, dst: ExtensionMap, mid: str | None
) -> list[tuple[int, bytes]]:
    """Re-number extensions by URI for the destination leg, drop the ones it did not
    negotiate, and write the destination's own mid."""
    out: list[tuple[int, bytes]] = []
    for ext_id, value in items:
        uri = src.by_id.get(ext_id)
        if uri is None or uri == URI_MID or uri == URI_TWCC:
            continue
        new_id = dst.by_uri.get(uri)
        if new_id is not None:
            out.append((new_id, value))
    mid_id = dst.by_uri.get(URI_MID)
    if mid is not None and mid_id is not None:
        out.append((mid_id, mid.encode()))
    return out


def pack_fixed(b0: int, b1: int, seq: int, ts: int, ssrc: int) -> bytes:
    return _FIXED.pack(b0, b1, seq, ts, ssrc)


def seq_diff(a: int, b: int) -> int:
    """a - b in 16-bit sequence space, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def is_keyframe_start(codec_name: str, payload: bytes) -> bool:
    """True when this packet starts a keyframe (audio: always)."""
    name = codec_name.lower()
    if not payload:
        return False
    if name == "vp8":
        return _vp8_keyframe(payload)
    if name == "h264":
        return _h264_keyframe(payload)
    return name not in ("vp9", "av1")


def _vp8_keyframe(p: bytes) -> bool:
    b0 = p[0]
    if not (b0 & 0x10) or (b0 & 0x07) != 0:  # S bit, partition 0
        return False
    i = 1
    if b0 & 0x80:  # X
        if len(p) <= i:
            return False
        x = p[i]
        i += 1
        if x & 0x80:  # I: picture id
            if len(p) <= i:
                return False
            i += 2 if p[i] & 0x80 else 1
        if x & 0x40:  # L
            i += 1
        if x & 0x30:  # T or K
            i += 1
    return len(p) > i and (p[i] & 0x01) == 0


def _h264_keyframe(p: bytes) -> bool:
    nal = p[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:  # STAP-A
        i = 1
        while i + 2 < len(p):
            size = (p[i] << 8) | p[i + 1]
            if i + 2 < len(p) and (p[i + 2] & 0x1F) in (5, 7):
                return True
            i += 2 + size
        return False
    if nal == 28 and len(p) > 1:  # FU-A
        return bool(p[1] & 0x80) and (p[1] & 0x1F) == 5
    return False
