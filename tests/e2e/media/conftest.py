"""The whole media path, end to end and all real: aiortc peers that encode and decode ->
the signaling WebSocket (two replicas) -> NATS -> two media nodes (in-process) -> RTP
over loopback ICE/DTLS/SRTP -> the peers.

NATS, Redis and the registry are the session's (tests/conftest.py and
tests/signaling/conftest.py); the WebSocket client helpers come from
tests/signaling/conftest.py and the peers from tests/media/peers.py. Nothing is a test
double: placement, heartbeats, relaying between nodes, slots and node failure are the
services' own.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest
import redis.asyncio as aioredis
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from fastapi import FastAPI

from services.common.tokens import TokenIssuer
from services.media.service import MediaService, media_node
from services.media.settings import MediaSettings
from services.signaling.main import create_app as create_signaling
from services.signaling.media import MediaNodes
from tests.infra import NatsServer, RedisServer, serve
from tests.media.peers import CONFIG, Publisher, SmallVideo, Viewer, prefer
from tests.signaling import conftest as signaling_conftest
from tests.signaling.conftest import Client, Room, Stack, signaling_settings

# The session's registry (the fixture shared with the signaling tests).
registry_url = signaling_conftest.registry_url

SLOTS = {"audio": 2, "video": 2, "screen": 1}  # small, to keep a shared machine calm
HEARTBEAT = 0.25  # media node heartbeat interval (s)
NODE_TIMEOUT = 1.5  # signaling: a node silent this long is down (s)
# Slot mids as aiortc (and browsers) number the subscriber's m-lines.
AUDIO_MIDS = ("0", "1")
VIDEO_MIDS = ("2", "3")
SCREEN_MID = "4"


class NodeUnderTest:
    """A real media node, running in this event loop until stopped."""

    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.service: MediaService | None = None
        self._running: contextlib.AbstractAsyncContextManager[MediaService] | None = None

    @property
    def node_id(self) -> str:
        return self.settings.media_node_id

    def load(self) -> dict[str, int]:
        return self.service.node.load() if self.service else {"subscribers": 0, "publishers": 0}

    def subscribers(self, webinar_id: str) -> set[str]:
        room = self.service.node.rooms.get(webinar_id) if self.service else None
        return set(room.subscribers) if room else set()

    async def start(self) -> None:
        assert self._running is None, "already running"
        self._running = media_node(self.settings)
        self.service = await self._running.__aenter__()

    async def stop(self) -> None:
        """Stop the node: its peer connections close and its heartbeats end."""
        if self._running is not None:
            running, self._running, self.service = self._running, None, None
            await running.__aexit__(None, None, None)


@dataclass
class MediaStack:
    """Registry, two signaling replicas, two media nodes; clients via `stack`/`room`."""

    stack: Stack
    apps: list[FastAPI]
    nodes: list[NodeUnderTest]  # nodes[0] sorts first: it becomes a new webinar's origin
    peers: list[Viewer | Publisher] = field(default_factory=list)

    def views(self) -> list[MediaNodes]:
        """Each signaling replica's view of the media nodes (from their heartbeats)."""
        return [app.state.signaling.media for app in self.apps]

    async def settled(self, within: float = 5.0) -> None:
        """Until every replica's view of every running node matches that node's load, so
        that placement (least-loaded node) is deterministic for the next request."""
        deadline = time.monotonic() + within
        while True:
            running = [n for n in self.nodes if n.service is not None]
            stale = [
                (n.node_id, view.nodes.get(n.node_id))
                for view in self.views()
                for n in running
                if (seen := view.nodes.get(n.node_id)) is None
                or (seen.subscribers, seen.publishers)
                != (n.load()["subscribers"], n.load()["publishers"])
            ]
            if not stale:
                return
            assert time.monotonic() < deadline, f"signaling's view is stale: {stale}"
            await asyncio.sleep(0.05)

    async def room(self) -> Room:
        room = await self.stack.webinar()
        await self.settled()
        return room

    async def publish(self, client: Client) -> tuple[Publisher, dict[str, Any]]:
        """Audio and camera, offered over the WebSocket as a client does; the reply."""
        pc = RTCPeerConnection(CONFIG)
        self.peers.append(publisher := Publisher(pc, SmallVideo()))
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(publisher.video)
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                prefer(transceiver, "VP8")
        await pc.setLocalDescription(await pc.createOffer())
        reply = await client.ok("publish", sdp=pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return publisher, reply

    async def subscribe(self, client: Client) -> tuple[Viewer, dict[str, Any]]:
        """The slots of the client's `welcome`, offered recvonly over the WebSocket: a
        viewer that decodes whatever arrives, and the reply (node_id, slots)."""
        slots = client.welcome["slots"]
        pc = RTCPeerConnection(CONFIG)
        for _ in range(slots["audio"]):
            pc.addTransceiver("audio", direction="recvonly")
        for _ in range(slots["video"] + slots["screen"]):
            pc.addTransceiver("video", direction="recvonly")
        viewer = Viewer(pc)
        self.peers.append(viewer)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
            mid = str(transceiver.mid)
            viewer.kinds[mid] = track.kind
            viewer.tasks.append(asyncio.ensure_future(viewer.consume(mid, track)))

        await pc.setLocalDescription(await pc.createOffer())
        reply = await client.ok("subscribe", sdp=pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        viewer.answered = time.monotonic()
        return viewer, reply

    async def close_peers(self) -> None:
        for peer in self.peers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    peer.close() if isinstance(peer, Viewer) else peer.pc.close(), 5
                )
        self.peers.clear()


async def frames_in(viewer: Viewer, mid: str, n: int, within: float = 10.0) -> int:
    """Until `viewer` has decoded at least `n` frames on slot `mid`."""
    deadline = time.monotonic() + within
    while viewer.frames.get(mid, 0) < n:
        assert time.monotonic() < deadline, f"slot {mid}: only {viewer.frames} decoded"
        await asyncio.sleep(0.05)
    return viewer.frames[mid]


def node_settings(nats_url: str, redis_url: str, node_id: str) -> MediaSettings:
    return MediaSettings(
        nats_url=nats_url,
        redis_url=redis_url,
        media_node_id=node_id,
        media_ice_host="127.0.0.1",  # loopback only; no STUN/TURN
        media_heartbeat_interval=HEARTBEAT,
        media_slots_audio=SLOTS["audio"],
        media_slots_video=SLOTS["video"],
        media_slots_screen=SLOTS["screen"],
    )


@contextlib.asynccontextmanager
async def running_media_stack(
    nats_url: str, redis_url: str, keypair: tuple[str, str], reg_url: str
) -> AsyncIterator[MediaStack]:
    private, public = keypair
    overrides: dict[str, Any] = {
        "signaling_media_node_timeout_seconds": NODE_TIMEOUT,
        "signaling_request_timeout_seconds": 5.0,
        "signaling_slots_audio": SLOTS["audio"],
        "signaling_slots_video": SLOTS["video"],
        "signaling_slots_screen": SLOTS["screen"],
    }
    apps = [
        create_signaling(signaling_settings(nats_url, redis_url, public, name, **overrides))
        for name in ("a", "b")
    ]
    tag = f"m{uuid.uuid4().hex[:8]}"  # fresh ids: `sig:media:down:<node>` outlives a test
    nodes = [NodeUnderTest(node_settings(nats_url, redis_url, tag + s)) for s in ("a", "b")]
    nc = await nats.connect(nats_url)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            serve(apps[0]) as url_a,
            serve(apps[1]) as url_b,
            httpx.AsyncClient(base_url=reg_url) as http,
        ):
            stack = Stack(reg_url, http, [url_a, url_b], nc, redis, TokenIssuer(private))
            media = MediaStack(stack, apps, nodes)
            try:
                for node in nodes:
                    await node.start()
                await media.settled()
                yield media
            finally:
                for client in stack.clients:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.close(), 2)
                await media.close_peers()
                for node in nodes:
                    await node.stop()
    finally:
        await nc.close()
        await redis.aclose()


@pytest.fixture
async def media(
    nats_server: NatsServer, redis_server: RedisServer, keypair: tuple[str, str], registry_url: str
) -> AsyncIterator[MediaStack]:
    async with running_media_stack(
        nats_server.url, redis_server.url, keypair, registry_url
    ) as stack:
        yield stack
