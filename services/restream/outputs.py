"""One output of a composed stage: an RTMP push (FLV) or an MP4 recording.

Each output encodes on its own thread (H.264 with libx264, AAC) so that connecting,
encoding and writing never block the event loop; the stage hands it pictures and sound
through a bounded queue and drops what a slow output cannot take.
"""

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container

from services.restream.compose import BYTES_PER_SAMPLE, SAMPLE_RATE, Picture

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoding:
    width: int
    height: int
    fps: int
    video_bitrate: int
    audio_bitrate: int
    preset: str
    keyframe_seconds: float
    connect_timeout: float


@dataclass(frozen=True)
class Chunk:
    """One output frame: the picture and the sound that goes with it."""

    picture: Picture
    sound: bytes


# ("connected", None) once the destination is open; ("done", error or None) at the end.
Notify = Callable[[str, BaseException | None], None]


class Output(threading.Thread):
    """Encodes chunks to `target` (an rtmp(s):// URL with format "flv", or an MP4 path)."""

    def __init__(
        self, output_id: str, target: str, fmt: str, enc: Encoding, notify: Notify
    ) -> None:
        super().__init__(name=f"restream-output-{output_id}", daemon=True)
        self.output_id = output_id
        self.target = target
        self.fmt = fmt
        self.enc = enc
        self.dropped = 0
        self._notify = notify
        self._queue: queue.Queue[Chunk | None] = queue.Queue(maxsize=max(2, enc.fps))
        self._stopping = threading.Event()

    def offer(self, chunk: Chunk) -> None:
        """Hand a chunk over; a full queue (slow ingest) drops it."""
        if self._stopping.is_set():
            return
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self.dropped += 1

    def stop(self) -> None:
        """Finish the file or stream after what is queued; returns at once."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def run(self) -> None:
        error: BaseException | None = None
        try:
            self._encode_all()
        except Exception as exc:  # noqa: BLE001 - reported to the service, never raised
            error = exc
        finally:
            self._notify("done", error)

    def _open(self) -> av.container.OutputContainer:
        options = {"movflags": "+frag_keyframe+empty_moov+default_base_moof"}
        timeout = self.enc.connect_timeout
        return av.open(
            self.target,
            mode="w",
            format=self.fmt,
            options=options if self.fmt == "mp4" else {},
            timeout=(timeout, timeout),
        )

    def _encode_all(self) -> None:
        enc = self.enc
        container = self._open()  # PyAV connects and writes the header at the first mux
        connected = False
        try:
            gop = max(1, round(enc.fps * enc.keyframe_seconds))
            video = container.add_stream("libx264", rate=enc.fps)
            video.width, video.height, video.pix_fmt = enc.width, enc.height, "yuv420p"
            video.bit_rate = enc.video_bitrate
            video.gop_size = gop
            video.options = {
                "preset": enc.preset,
                "tune": "zerolatency",
                "keyint_min": str(gop),
                "sc_threshold": "0",
            }
            audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
            audio.bit_rate = enc.audio_bitrate
            frame_index = 0
            samples = 0
            while True:
                chunk = self._queue.get()
                if chunk is None:
                    break
                frame = chunk.picture.to_frame()
                frame.pts, frame.time_base = frame_index, Fraction(1, enc.fps)
                frame_index += 1
                for packet in video.encode(frame):
                    container.mux(packet)
                    if not connected:
                        connected = True
                        self._notify("connected", None)
                count = len(chunk.sound) // BYTES_PER_SAMPLE
                if count:
                    sound = av.AudioFrame(format="s16", layout="stereo", samples=count)
                    sound.planes[0].update(
                        chunk.sound + bytes(sound.planes[0].buffer_size - len(chunk.sound))
                    )
                    sound.sample_rate = SAMPLE_RATE
                    sound.pts, sound.time_base = samples, Fraction(1, SAMPLE_RATE)
                    samples += count
                    for packet in audio.encode(sound):
                        container.mux(packet)
            for stream in (video, audio):
                for packet in stream.encode(None):
                    container.mux(packet)
        except BaseException:
            with contextlib.suppress(Exception):
                container.close()
            raise
        container.close()
