"""Real aiortc peers for the media tests: a publisher that encodes, viewers that decode."""

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

CONFIG = RTCConfiguration(
    iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
)  # loopback only, never a public STUN server


class SmallVideo(VideoStreamTrack):
    """A moving 320x240 pattern: real frames for the real VP8/H.264 encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.chroma = bytes([128]) * (160 * 120)
        self.images = [
            bytes((x + y + 8 * k) & 0xFF for y in range(240) for x in range(320)) for k in range(8)
        ]

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.n += 1
        image = self.images[self.n % len(self.images)]
        frame = av.VideoFrame(320, 240, "yuv420p")
        frame.planes[0].update(image)
        frame.planes[1].update(self.chroma)
        frame.planes[2].update(self.chroma)
        frame.pts, frame.time_base = pts, time_base
        return frame


def prefer(transceiver: Any, codec: str) -> None:
    caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences(
        [c for c in caps if c.name == codec] + [c for c in caps if c.name == "rtx"]
    )


async def call(nc: NATS, node_id: str, op: str, **payload: Any) -> dict[str, Any]:
    """A request as signaling makes it (retrying the rare no-responders right after a
    node's start, seen about once in 30 starts)."""
    data = json.dumps(payload).encode()
    for _ in range(3):
        try:
            msg = await nc.request(f"svc.media.{node_id}.{op}", data, timeout=10)
            break
        except NoRespondersError:
            await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"no media node {node_id} answers {op}")
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


@dataclass
class Publisher:
    pc: RTCPeerConnection
    video: SmallVideo


async def publish(
    nc: NATS,
    node_id: str,
    webinar_id: str,
    participant_id: str,
    codec: str = "VP8",
    screen: bool = False,
) -> Publisher:
    """Audio, camera and (optionally) a screen share, as a client offers them."""
    pc = RTCPeerConnection(CONFIG)
    pc.addTrack(AudioStreamTrack())
    video = SmallVideo()
    pc.addTrack(video)
    if screen:
        pc.addTransceiver(SmallVideo(), direction="sendonly")
    for t in pc.getTransceivers():
        if t.kind == "video":
            prefer(t, codec)
    await pc.setLocalDescription(await pc.createOffer())
    reply = await call(nc, node_id, "publish", webinar_id=webinar_id,
                       participant_id=participant_id, sdp=pc.localDescription.sdp)  # fmt: skip
    assert reply["ok"], reply
    await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    return Publisher(pc, video)


@dataclass
class Viewer:
    """A subscriber that decodes everything it gets and counts frames by kind and mid."""

    pc: RTCPeerConnection
    frames: dict[str, int] = field(default_factory=dict)  # mid -> decoded frames
    kinds: dict[str, str] = field(default_factory=dict)  # mid -> audio|video
    first_video: float | None = None
    answered: float = 0.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(n for mid, n in self.frames.items() if self.kinds.get(mid) == kind)

    async def wait_for(self, kind: str, n: int, within: float = 10.0) -> int:
        deadline = time.monotonic() + within
        while self.count(kind) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {self.count(kind)} {kind} frames decoded: {self.frames}"
                )
            await asyncio.sleep(0.05)
        return self.count(kind)

    async def consume(self, mid: str, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()  # a decoded av.VideoFrame / av.AudioFrame
            except Exception:  # noqa: BLE001 - track ended
                return
            self.frames[mid] = self.frames.get(mid, 0) + 1
            if self.kinds[mid] == "video" and self.first_video is None:
                self.first_video = time.monotonic()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()


async def subscribe(
    nc: NATS,
    node_id: str,
    webinar_id: str,
    participant_id: str,
    slots: tuple[int, int, int],
    origin_node: str | None = None,
) -> Viewer:
    pc = RTCPeerConnection(CONFIG)
    audio, video, screen = slots
    for kind, n in (("audio", audio), ("video", video + screen)):
        for _ in range(n):
            pc.addTransceiver(kind, direction="recvonly")
    viewer = Viewer(pc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
        mid = str(transceiver.mid)
        viewer.kinds[mid] = track.kind
        viewer.tasks.append(asyncio.ensure_future(viewer.consume(mid, track)))

    await pc.setLocalDescription(await pc.createOffer())
    payload: dict[str, Any] = {"webinar_id": webinar_id, "participant_id": participant_id,
                               "sdp": pc.localDescription.sdp}  # fmt: skip
    if origin_node:
        payload["origin_node"] = origin_node
    reply = await call(nc, node_id, "subscribe", **payload)
    assert reply["ok"], reply
    await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    viewer.answered = time.monotonic()
    return viewer


@contextlib.asynccontextmanager
async def closing(*peers: Any):  # type: ignore[no-untyped-def]
    try:
        yield
    finally:
        for peer in peers:
            await peer.close() if isinstance(peer, Viewer) else await peer.pc.close()
