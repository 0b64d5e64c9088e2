"""The stage as one picture and one sound, from the decoded slots (PyAV only, no numpy).

`Compositor` keeps the latest frame of every video slot and a short buffer of every audio
slot. `picture()` lays the live video slots out on a canvas (a grid of cameras, or the
screen share large with the cameras in a column beside it) and returns its YUV 4:2:0
planes; `sound(n)` mixes the live audio slots into n samples of 48 kHz stereo s16.
"""

import audioop
import math
import time
from dataclasses import dataclass, field

import av
from av.audio.resampler import AudioResampler

SAMPLE_RATE = 48_000
CHANNELS = 2
BYTES_PER_SAMPLE = 2 * CHANNELS  # s16 interleaved stereo
MAX_BUFFERED = SAMPLE_RATE // 4  # samples kept per audio slot before the oldest go
BLACK = (16, 128, 128)  # Y, U, V


@dataclass(frozen=True)
class Picture:
    """Tightly packed YUV 4:2:0 planes of a width x height picture."""

    width: int
    height: int
    planes: tuple[bytes, bytes, bytes]

    def to_frame(self) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for index, (plane, data) in enumerate(zip(frame.planes, self.planes, strict=True)):
            width = self.width if index == 0 else self.width // 2
            rows = self.height if index == 0 else self.height // 2
            if plane.line_size == width:
                plane.update(data)
                continue
            padded = bytearray(plane.line_size * rows)
            for row in range(rows):
                start = row * plane.line_size
                padded[start : start + width] = data[row * width : (row + 1) * width]
            plane.update(bytes(padded))
        return frame


@dataclass
class _AudioSlot:
    resampler: AudioResampler
    buffer: bytearray = field(default_factory=bytearray)
    seen: float = 0.0


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    width: int
    height: int


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def grid(count: int, width: int, height: int) -> list[Tile]:
    """`count` equal tiles filling width x height, as square a grid as possible."""
    if count <= 0:
        return []
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    tile_w, tile_h = _even(width / cols), _even(height / rows)
    return [Tile((i % cols) * tile_w, (i // cols) * tile_h, tile_w, tile_h) for i in range(count)]


def layout(cameras: int, screen: bool, width: int, height: int) -> tuple[Tile | None, list[Tile]]:
    """Where the screen share (if any) and each camera go."""
    if not screen:
        return None, grid(cameras, width, height)
    if cameras == 0:
        return Tile(0, 0, width, height), []
    side = _even(width / 4)
    column = [
        Tile(
            width - side, i * _even(height / max(cameras, 4)), side, _even(height / max(cameras, 4))
        )
        for i in range(cameras)
    ]
    return Tile(0, 0, width - side, height), column


def fit(frame_w: int, frame_h: int, tile: Tile) -> Tile:
    """The largest even-sized box of the frame's aspect ratio, centred in the tile."""
    scale = min(tile.width / frame_w, tile.height / frame_h)
    w, h = min(_even(frame_w * scale), tile.width), min(_even(frame_h * scale), tile.height)
    return Tile(tile.x + (tile.width - w) // 4 * 2, tile.y + (tile.height - h) // 4 * 2, w, h)


class Compositor:
    def __init__(
        self,
        width: int,
        height: int,
        screen_mids: set[str],
        stale_seconds: float,
    ) -> None:
        self.width, self.height = _even(width), _even(height)
        self.screen_mids = screen_mids
        self.stale_seconds = stale_seconds
        self._video: dict[str, tuple[av.VideoFrame, float]] = {}
        self._audio: dict[str, _AudioSlot] = {}
        self._canvas = (
            bytes([BLACK[0]]) * (self.width * self.height),
            bytes([BLACK[1]]) * (self.width * self.height // 4),
            bytes([BLACK[2]]) * (self.width * self.height // 4),
        )

    # --- input, from the decoding tasks -------------------------------------------------

    def add_video(self, mid: str, frame: av.VideoFrame) -> None:
        self._video[mid] = (frame, time.monotonic())

    def add_audio(self, mid: str, frame: av.AudioFrame) -> None:
        slot = self._audio.get(mid)
        if slot is None:
            resampler = AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
            slot = self._audio[mid] = _AudioSlot(resampler)
        for out in slot.resampler.resample(frame):
            slot.buffer += bytes(out.planes[0])[: out.samples * BYTES_PER_SAMPLE]
        excess = len(slot.buffer) - MAX_BUFFERED * BYTES_PER_SAMPLE
        if excess > 0:
            del slot.buffer[:excess]
        slot.seen = time.monotonic()

    def live_video(self) -> tuple[list[str], str | None]:
        """(camera mids, screen mid) with a recent frame, in slot order."""
        now = time.monotonic()
        live = sorted(
            (mid for mid, (_, seen) in self._video.items() if now - seen <= self.stale_seconds),
            key=lambda m: int(m) if m.isdigit() else 0,
        )
        screens = [m for m in live if m in self.screen_mids]
        return [m for m in live if m not in self.screen_mids], (screens[0] if screens else None)

    # --- output, once per output frame --------------------------------------------------

    def picture(self) -> Picture:
        cameras, screen = self.live_video()
        screen_tile, camera_tiles = layout(
            len(cameras), screen is not None, self.width, self.height
        )
        planes = [bytearray(p) for p in self._canvas]
        placed = list(zip(cameras, camera_tiles, strict=True))
        if screen is not None and screen_tile is not None:
            placed.append((screen, screen_tile))
        for mid, tile in placed:
            frame = self._video[mid][0]
            box = fit(frame.width, frame.height, tile)
            self._blit(planes, frame.reformat(box.width, box.height, "yuv420p"), box)
        return Picture(
            self.width, self.height, (bytes(planes[0]), bytes(planes[1]), bytes(planes[2]))
        )

    def _blit(self, planes: list[bytearray], frame: av.VideoFrame, box: Tile) -> None:
        for index, plane in enumerate(frame.planes):
            shift = 0 if index == 0 else 1
            width, rows = box.width >> shift, box.height >> shift
            x, y, stride = box.x >> shift, box.y >> shift, self.width >> shift
            src, line = bytes(plane), plane.line_size
            dst = planes[index]
            for row in range(rows):
                at = (y + row) * stride + x
                dst[at : at + width] = src[row * line : row * line + width]

    def sound(self, samples: int) -> bytes:
        """`samples` of the live audio slots mixed (silence where nobody speaks)."""
        size = samples * BYTES_PER_SAMPLE
        now = time.monotonic()
        mixed = bytes(size)
        for slot in self._audio.values():
            if now - slot.seen > self.stale_seconds and not slot.buffer:
                continue
            chunk = bytes(slot.buffer[:size])
            del slot.buffer[:size]
            if len(chunk) < size:
                chunk += bytes(size - len(chunk))
            mixed = audioop.add(mixed, chunk, 2)
        return mixed
