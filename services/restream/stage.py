"""A webinar's stage as the restream service sees it: one hidden subscriber.

`Stage` subscribes to the webinar's origin media node like a viewer does (A audio, V
video, S screen recvonly slots, one peer connection, max-bundle), decodes every slot,
composes them (`Compositor`) at the output frame rate and hands each frame to every
`Output` attached. Its participant id (`restream-<id>`) exists only on the media node:
it never joins through signaling, so it is in no participant list.
"""

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import av
import nats.errors
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from nats.aio.client import Client as NATS

from services.media import aiortc_adapter
from services.restream.compose import SAMPLE_RATE, Compositor
from services.restream.outputs import Chunk, Output
from services.restream.settings import RestreamSettings

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """The media node refused or did not answer the subscription."""


class Stage:
    def __init__(
        self, nc: NATS, settings: RestreamSettings, webinar_id: str, participant_id: str
    ) -> None:
        self.nc = nc
        self.settings = settings
        self.webinar_id = webinar_id
        self.participant_id = participant_id
        self.node_id = ""
        self.outputs: dict[str, Output] = {}
        audio, video = settings.restream_slots_audio, settings.restream_slots_video
        screens = {str(audio + video + i) for i in range(settings.restream_slots_screen)}
        self.compositor = Compositor(
            settings.restream_width,
            settings.restream_height,
            screens,
            settings.restream_stale_seconds,
        )
        self.frames: dict[str, int] = {}  # mid -> frames decoded
        self._pc = aiortc_adapter.new_peer_connection(
            aiortc_adapter.ice_servers(
                [u for u in settings.restream_ice_servers.split(",") if u.strip()],
                settings.restream_ice_username,
                settings.restream_ice_credential,
            )
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, node_id: str) -> None:
        """Subscribe on `node_id` (the webinar's origin) and start composing."""
        self.node_id = node_id
        pc, s = self._pc, self.settings
        for kind, count in (
            ("audio", s.restream_slots_audio),
            ("video", s.restream_slots_video + s.restream_slots_screen),
        ):
            for _ in range(count):
                pc.addTransceiver(kind, direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
            self._spawn(self._consume(str(transceiver.mid), track))

        await pc.setLocalDescription(await pc.createOffer())
        reply = await self._request("subscribe", sdp=pc.localDescription.sdp, origin_node=node_id)
        await pc.setRemoteDescription(RTCSessionDescription(str(reply["sdp"]), "answer"))
        self._spawn(self._compose())

    async def _request(self, op: str, **body: Any) -> dict[str, Any]:
        payload = {"webinar_id": self.webinar_id, "participant_id": self.participant_id} | body
        subject = f"svc.media.{self.node_id}.{op}"
        try:
            for attempt in range(2):
                try:
                    msg = await self.nc.request(
                        subject,
                        json.dumps(payload).encode(),
                        timeout=self.settings.restream_request_timeout_seconds,
                    )
                    break
                except nats.errors.NoRespondersError:
                    if attempt:
                        raise
                    await asyncio.sleep(0.2)
            reply = json.loads(msg.data)
        except (nats.errors.Error, TimeoutError, ValueError) as exc:
            raise StageError(f"media node {self.node_id} did not answer {op}") from exc
        if not isinstance(reply, dict) or reply.get("ok") is False or "sdp" not in reply:
            message = reply.get("message") if isinstance(reply, dict) else None
            raise StageError(f"media node {self.node_id} refused {op}: {message or reply}")
        return reply

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames[mid] = self.frames.get(mid, 0) + 1
            try:
                if isinstance(frame, av.VideoFrame):
                    self.compositor.add_video(mid, frame)
                elif isinstance(frame, av.AudioFrame):
                    self.compositor.add_audio(mid, frame)
            except Exception as exc:  # noqa: BLE001 - one odd frame must not end the slot
                log.warning("slot %s of %s: frame skipped: %s", mid, self.webinar_id, exc)

    async def _compose(self) -> None:
        """Once per output frame: compose and hand the chunk to every output."""
        fps = self.settings.restream_fps
        start = time.monotonic()
        index = 0
        emitted = 0
        while True:
            index += 1
            delay = start + index / fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # the machine stalled: skip ahead rather than burst
                start, index = time.monotonic(), 0
                emitted = 0
                continue
            if not self.outputs:
                continue
            due = round(index * SAMPLE_RATE / fps) - emitted
            emitted += due
            try:
                chunk = Chunk(self.compositor.picture(), self.compositor.sound(due))
            except Exception:  # keep the outputs fed with the next frame
                log.exception("composing %s failed", self.webinar_id)
                continue
            for output in list(self.outputs.values()):
                output.offer(chunk)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pc.close(), 5)
        if self.node_id:
            payload = {"webinar_id": self.webinar_id, "participant_id": self.participant_id}
            with contextlib.suppress(nats.errors.Error):
                await self.nc.publish(
                    f"svc.media.{self.node_id}.leave", json.dumps(payload).encode()
                )
