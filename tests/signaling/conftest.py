"""Two signaling replicas, the real registry, real NATS and Redis, fake media nodes and
a chat responder (test doubles on real NATS), and WebSocket clients."""

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest
import redis.asyncio as aioredis
import uvicorn
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.common.events import CloudEvent
from services.common.tokens import Role, TokenIssuer
from services.registry.main import create_app as create_registry
from services.signaling.main import create_app as create_signaling
from services.signaling.settings import SignalingSettings
from tests.infra import free_port, serve
from tests.registry.conftest import ADMIN, registry_settings, webinar_body

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
GRACE = 1.0
WAIT = 5.0

Pred = Callable[[dict[str, Any]], bool]


class Client:
    """A WebSocket client that keeps every frame it got."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._taken: set[int] = set()
        self._changed = asyncio.Event()
        self._ids = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.done = False
        self._task = asyncio.create_task(self._read())
        self.welcome: dict[str, Any] = {}

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_code, self.close_reason = self.ws.close_code, self.ws.close_reason
            self.done = True
            self._changed.set()

    def _find(self, pred: Pred) -> dict[str, Any] | None:
        for i, frame in enumerate(self.frames):
            if i not in self._taken and pred(frame):
                self._taken.add(i)
                return frame
        return None

    async def wait(self, pred: Pred, within: float = WAIT, what: str = "frame") -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            found = self._find(pred)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if self.done or left <= 0:
                raise AssertionError(
                    f"no {what}; closed={self.close_code} {self.close_reason}; "
                    f"frames={self.frames[-8:]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def request(self, type_: str, within: float = WAIT, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        rid = self._ids
        await self.send({"id": rid, "type": type_, **fields})
        return await self.wait(lambda f: f.get("id") == rid, within, f"reply to {type_}")

    async def ok(self, type_: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(type_, **fields)
        assert reply["type"] == "ok", reply
        return reply

    async def error(self, type_: str, code: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(type_, **fields)
        assert reply["type"] == "error" and reply["code"] == code, reply
        return reply

    async def event(self, name: str, within: float = WAIT, **data: Any) -> dict[str, Any]:
        def match(f: dict[str, Any]) -> bool:
            return (
                f.get("type") == "event"
                and f.get("event") == name
                and all(f["data"].get(k) == v for k, v in data.items())
            )

        frame = await self.wait(match, within, f"event {name} {data}")
        return frame["data"]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [f["data"] for f in self.frames if f.get("type") == "event" and f["event"] == name]

    async def closed(self, within: float = WAIT) -> tuple[int | None, str | None]:
        deadline = time.monotonic() + within
        while not self.done:
            assert time.monotonic() < deadline, f"still open; frames={self.frames[-5:]}"
            await asyncio.sleep(0.02)
        return self.close_code, self.close_reason

    async def close(self) -> None:
        await self.ws.close()
        await self._task


class Events:
    """Public events seen on NATS (`webinar.<id>.>`), as integrators see them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, CloudEvent]] = []

    async def on_msg(self, msg: Msg) -> None:
        self.items.append((msg.subject, CloudEvent.model_validate_json(msg.data)))

    def of(self, name: str, **data: Any) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for subject, event in self.items:
            if event.event_type == name and all(event.data.get(k) == v for k, v in data.items()):
                assert subject == f"webinar.{event.subject}.{name}"
                assert event.type == f"io.webinar.{name}.v1"
                seen[event.id] = event.data
        return list(seen.values())

    async def wait(self, name: str, within: float = WAIT, **data: Any) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            found = self.of(name, **data)
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no {name} {data} on NATS; got " + str(
                [e.event_type for _, e in self.items]
            )
            await asyncio.sleep(0.02)


class FakeMediaNode:
    """A media node double on real NATS: heartbeats and answers signaling's commands."""

    def __init__(self, nc: NATS, node_id: str, capacity: int = 100, subscribers: int = 0) -> None:
        self.nc = nc
        self.node_id = node_id
        self.capacity = capacity
        self.subscribers = subscribers
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._beat: asyncio.Task[None] | None = None
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"svc.media.{self.node_id}.*", cb=self._on_command)
        await self.heartbeat()
        self._beat = asyncio.create_task(self._beats())

    async def heartbeat(self) -> None:
        body = {"node_id": self.node_id, "subscribers": self.subscribers, "publishers": 0,
                "capacity": self.capacity, "draining": False}  # fmt: skip
        await self.nc.publish("svc.media.heartbeat", json.dumps(body).encode())
        await self.nc.flush()

    async def _beats(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self.heartbeat()

    async def _on_command(self, msg: Msg) -> None:
        op = msg.subject.rsplit(".", 1)[1]
        body = json.loads(msg.data)
        self.calls.append((op, body))
        if not msg.reply:
            return
        if op in ("publish", "subscribe"):
            answer = f"v=0\r\ns=answer-from-{self.node_id}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
            await msg.respond(json.dumps({"sdp": answer}).encode())
        else:
            await msg.respond(json.dumps({"ok": True}).encode())

    def ops(self, op: str, **match: Any) -> list[dict[str, Any]]:
        return [
            b for o, b in self.calls if o == op and all(b.get(k) == v for k, v in match.items())
        ]

    async def stop(self) -> None:
        if self._beat:
            self._beat.cancel()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None


@dataclass
class Stack:
    registry_url: str
    http: httpx.AsyncClient
    replicas: list[str]
    nc: NATS
    redis: aioredis.Redis
    issuer: TokenIssuer
    clients: list[Client] = field(default_factory=list)
    nodes: list[FakeMediaNode] = field(default_factory=list)

    async def webinar(self, **overrides: Any) -> "Room":
        resp = await self.http.post(
            "/v1/webinars", json=webinar_body(**overrides),
            headers={"Authorization": f"Bearer {ADMIN}"},
        )  # fmt: skip
        assert resp.status_code == 201, resp.text
        created = resp.json()
        events = Events()
        await self.nc.subscribe(f"webinar.{created['id']}.>", cb=events.on_msg)
        await self.nc.flush()
        return Room(self, created["id"], created["host"]["token"], created, events)

    def token(self, wid: str, role: str, pid: str | None = None, name: str | None = None,
              expires_in: int = 3600) -> str:  # fmt: skip
        pid = pid or f"{role[0]}_{uuid.uuid4().hex[:10]}"
        return self.issuer.issue(wid, pid, name or f"{role} {pid}", Role(role),
                                 int(time.time()) + expires_in)  # fmt: skip

    def ws_url(self, replica: int) -> str:
        return self.replicas[replica].replace("http://", "ws://") + "/v1/ws"

    async def open(self, token: str, replica: int = 0) -> Client:
        ws = await connect(f"{self.ws_url(replica)}?token={token}", open_timeout=WAIT)
        client = Client(ws)
        self.clients.append(client)
        return client

    async def join(self, token: str, replica: int = 0) -> Client:
        client = await self.open(token, replica)
        client.welcome = await client.wait(lambda f: f.get("type") == "welcome", what="welcome")
        assert client.frames[0]["type"] == "welcome"
        return client

    async def refused(self, token: str, replica: int = 0) -> tuple[int | None, dict[str, Any]]:
        """Join expecting a refusal: (close code, final error frame); never a welcome."""
        client = await self.open(token, replica)
        code, _ = await client.closed()
        assert all(f["type"] != "welcome" for f in client.frames), client.frames
        assert client.frames and client.frames[-1]["type"] == "error", client.frames
        return code, client.frames[-1]

    async def media_node(self, node_id: str, **kwargs: Any) -> FakeMediaNode:
        node = FakeMediaNode(self.nc, node_id, **kwargs)
        await node.start()
        self.nodes.append(node)
        await asyncio.sleep(0.05)
        return node


@dataclass
class Room:
    stack: Stack
    id: str
    host_token: str
    created: dict[str, Any]
    events: Events

    def token(self, role: str, pid: str | None = None, name: str | None = None) -> str:
        return self.stack.token(self.id, role, pid, name)

    async def join(self, role: str, replica: int = 0, pid: str | None = None,
                   name: str | None = None) -> Client:  # fmt: skip
        token = self.host_token if role == "host" else self.token(role, pid, name)
        return await self.stack.join(token, replica)

    async def started(self, replica: int = 0) -> Client:
        """The host, joined and having started the webinar."""
        host = await self.join("host", replica)
        await host.ok("webinar.start")
        return host


def signaling_settings(nats_url: str, redis_url: str, public: str, name: str,
                       **overrides: Any) -> SignalingSettings:  # fmt: skip
    values: dict[str, Any] = {
        "nats_url": nats_url, "redis_url": redis_url, "jwt_public_key": public,
        "signaling_replica_id": name, "signaling_reconnect_grace_seconds": GRACE,
        "signaling_media_node_timeout_seconds": 1.0, "signaling_request_timeout_seconds": 1.5,
        "signaling_rate_per_second": 50.0, "signaling_rate_burst": 60,
        "signaling_flood_close_after": 30, "signaling_webinar_cache_seconds": 0.5,
    }  # fmt: skip
    values.update(overrides)
    return SignalingSettings(**values)


class ThreadedServer:
    """An app served by uvicorn on its own thread and event loop, for the whole session.

    The registry runs this way: once per session, and its shutdown (which can wait for
    its JetStream pull consumer to drain) never blocks a test's event loop.
    """

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "registry did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        if self.thread.is_alive():
            # The registry's shutdown drains NATS and may outlive the session's stderr.
            logging.raiseExceptions = False


@pytest.fixture(scope="session")
def registry_url(nats_server, redis_server, keypair) -> Iterator[str]:
    server = ThreadedServer(
        create_registry(registry_settings(nats_server.url, redis_server.url, keypair))
    )
    server.start()
    yield server.url
    server.stop()


@contextlib.asynccontextmanager
async def running_stack(nats_url: str, redis_url: str, keypair: tuple[str, str], reg_url: str
                        ) -> AsyncIterator[Stack]:  # fmt: skip
    private, public = keypair
    sig_a = create_signaling(signaling_settings(nats_url, redis_url, public, "a"))
    sig_b = create_signaling(signaling_settings(nats_url, redis_url, public, "b"))
    nc = await nats.connect(nats_url)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    async with (
        serve(sig_a) as url_a,
        serve(sig_b) as url_b,
        httpx.AsyncClient(base_url=reg_url) as http,
    ):
        stack = Stack(reg_url, http, [url_a, url_b], nc, redis, TokenIssuer(private))
        try:
            yield stack
        finally:
            for client in stack.clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 2)
            for node in stack.nodes:
                await node.stop()
    await nc.close()
    await redis.aclose()


@pytest.fixture
async def stack(nats_server, redis_server, keypair, registry_url) -> AsyncIterator[Stack]:
    async with running_stack(nats_server.url, redis_server.url, keypair, registry_url) as s:
        yield s
