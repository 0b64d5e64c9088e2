"""Codecs as negotiated on a leg, matched by name, clock rate and fmtp."""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    clock_rate: int
    payload_type: int
    channels: int | None = None
    params: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_rtx(self) -> bool:
        return self.name.lower() == "rtx"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "clock_rate": self.clock_rate, "pt": self.payload_type,
                "channels": self.channels, "params": dict(self.params)}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, object]) -> "Codec":
        channels = d.get("channels")
        params = d.get("params") or {}
        assert isinstance(params, dict)
        return cls(
            name=str(d["name"]),
            clock_rate=int(str(d["clock_rate"])),
            payload_type=int(str(d["pt"])),
            channels=int(str(channels)) if channels is not None else None,
            params={str(k): str(v) for k, v in params.items()},
        )


def h264_profile(params: dict[str, str]) -> str:
    """The H.264 profile named by profile-level-id (level ignored)."""
    pli = params.get("profile-level-id", "42e01f").lower()
    try:
        idc, iop = int(pli[0:2], 16), int(pli[2:4], 16)
    except ValueError:
        return "invalid"
    if idc == 0x42:
        return "constrained-baseline" if iop & 0x40 else "baseline"
    if idc == 0x4D:
        return "constrained-baseline" if iop & 0x80 else "main"
    if idc == 0x64:
        return "constrained-high" if iop & 0x0C == 0x0C else "high"
    return f"{idc:02x}"


def compatible(a: Codec, b: Codec) -> bool:
    if a.name.lower() != b.name.lower() or a.clock_rate != b.clock_rate:
        return False
    if a.name.lower() == "h264":
        mode_a = a.params.get("packetization-mode", "0")
        mode_b = b.params.get("packetization-mode", "0")
        return mode_a == mode_b and h264_profile(a.params) == h264_profile(b.params)
    return True


def match_codec(source: Codec, offered: list[Codec]) -> Codec | None:
    """The leg's codec that can carry the source's packets unchanged, if any."""
    for codec in offered:
        if not codec.is_rtx and compatible(source, codec):
            return codec
    return None
