"""The few RTCP packets an SFU reads and writes, on plain bytes (RFC 3550, 4585, 5104)."""

import struct
from dataclasses import dataclass

SR, RR, SDES, BYE, RTPFB, PSFB = 200, 201, 202, 203, 205, 206
FMT_NACK = 1
FMT_PLI, FMT_FIR, FMT_APP = 1, 4, 15

NTP_EPOCH_OFFSET = 2208988800


@dataclass(slots=True)
class RtcpPacket:
    packet_type: int
    fmt: int  # report count for SR/RR
    body: bytes  # everything after the 4-byte common header

    @property
    def sender_ssrc(self) -> int:
        return struct.unpack_from("!I", self.body)[0] if len(self.body) >= 4 else 0

    @property
    def media_ssrc(self) -> int:
        return struct.unpack_from("!I", self.body, 4)[0] if len(self.body) >= 8 else 0


def parse_compound(data: bytes) -> list[RtcpPacket]:
    out: list[RtcpPacket] = []
    pos = 0
    while pos + 4 <= len(data):
        b0, pt, length = struct.unpack_from("!BBH", data, pos)
        end = pos + 4 + 4 * length
        if b0 >> 6 != 2 or end > len(data):
            break
        out.append(RtcpPacket(pt, b0 & 0x1F, data[pos + 4 : end]))
        pos = end
    return out


def _header(fmt: int, pt: int, body: bytes) -> bytes:
    return struct.pack("!BBH", 0x80 | fmt, pt, len(body) // 4) + body


# --- feedback -------------------------------------------------------------------------


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return _header(FMT_PLI, PSFB, struct.pack("!II", sender_ssrc, media_ssrc))


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    fci = struct.pack("!IB3x", media_ssrc, seq_nr & 0xFF)
    return _header(FMT_FIR, PSFB, struct.pack("!II", sender_ssrc, 0) + fci)


def build_nack(sender_ssrc: int, media_ssrc: int, lost: list[int]) -> bytes:
    fci = b""
    lost = sorted(set(lost))
    i = 0
    while i < len(lost):
        pid, blp = lost[i], 0
        i += 1
        while i < len(lost) and 0 < (lost[i] - pid) & 0xFFFF <= 16:
            blp |= 1 << (((lost[i] - pid) & 0xFFFF) - 1)
            i += 1
        fci += struct.pack("!HH", pid, blp)
    return _header(FMT_NACK, RTPFB, struct.pack("!II", sender_ssrc, media_ssrc) + fci)


def parse_nack(packet: RtcpPacket) -> list[int]:
    lost: list[int] = []
    for pos in range(8, len(packet.body) - 3, 4):
        pid, blp = struct.unpack_from("!HH", packet.body, pos)
        lost.append(pid)
        for bit in range(16):
            if blp & (1 << bit):
                lost.append((pid + bit + 1) & 0xFFFF)
    return lost


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    exp = 0
    mantissa = max(0, int(bitrate))
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exp += 1
    fci = b"REMB" + struct.pack(
        "!BBH", len(ssrcs), (exp << 2) | (mantissa >> 16), mantissa & 0xFFFF
    )
    fci += b"".join(struct.pack("!I", s) for s in ssrcs)
    return _header(FMT_APP, PSFB, struct.pack("!II", sender_ssrc, 0) + fci)


def parse_remb(packet: RtcpPacket) -> tuple[int, list[int]] | None:
    fci = packet.body[8:]
    if packet.packet_type != PSFB or packet.fmt != FMT_APP or fci[:4] != b"REMB":
        return None
    if len(fci) < 8:
        return None
    n, b1, low = struct.unpack_from("!BBH", fci, 4)
    bitrate = (((b1 & 0x03) << 16) | low) << (b1 >> 2)
    ssrcs = [
        struct.unpack_from("!I", fci, 8 + 4 * i)[0] for i in range(n) if 12 + 4 * i <= len(fci)
    ]
    return bitrate, ssrcs


# --- reports --------------------------------------------------------------------------


@dataclass(slots=True)
class SenderInfo:
    ntp: int  # 64-bit NTP timestamp
    rtp: int
    packets: int
    octets: int


def parse_sender_info(packet: RtcpPacket) -> SenderInfo:
    ntp_hi, ntp_lo, rtp, packets, octets = struct.unpack_from("!IIIII", packet.body, 4)
    return SenderInfo((ntp_hi << 32) | ntp_lo, rtp, packets, octets)


def ntp_from_unix(seconds: float) -> int:
    whole = int(seconds)
    return ((whole + NTP_EPOCH_OFFSET) << 32) | int((seconds - whole) * (1 << 32))


def build_sr(ssrc: int, info: SenderInfo) -> bytes:
    body = struct.pack(
        "!IIIIII",
        ssrc,
        (info.ntp >> 32) & 0xFFFFFFFF,
        info.ntp & 0xFFFFFFFF,
        info.rtp & 0xFFFFFFFF,
        info.packets & 0xFFFFFFFF,
        info.octets & 0xFFFFFFFF,
    )
    return _header(0, SR, body)


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int  # extended
    jitter: int
    lsr: int
    dlsr: int

    def pack(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return struct.pack(
            "!IIIIII",
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_seq & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )


def build_rr(sender_ssrc: int, blocks: list[ReportBlock]) -> bytes:
    body = struct.pack("!I", sender_ssrc) + b"".join(b.pack() for b in blocks[:31])
    return _header(min(len(blocks), 31), RR, body)


def parse_report_blocks(packet: RtcpPacket) -> list[ReportBlock]:
    start = 24 if packet.packet_type == SR else 4
    out: list[ReportBlock] = []
    for i in range(packet.fmt):
        pos = start + 24 * i
        if pos + 24 > len(packet.body):
            break
        ssrc, lost_word, high, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", packet.body, pos)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        out.append(ReportBlock(ssrc, lost_word >> 24, lost, high, jitter, lsr, dlsr))
    return out


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    raw = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, 1, len(raw)) + raw + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, SDES, chunk)
