"""The chat service in-process against real NATS and Redis, called as signaling calls it."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.chat.main import ChatService, running
from services.chat.settings import ChatSettings
from services.common.audience import visible_to
from services.common.events import CloudEvent
from services.common.subjects import chat_command
from tests.infra import NatsServer, RedisServer


@dataclass(frozen=True)
class P:
    """A participant reference as signaling sends it."""

    id: str
    role: str
    name: str = ""
    on_stage: bool = False

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name or self.id, "role": self.role,
                "on_stage": self.on_stage}  # fmt: skip

    def sees(self, event: CloudEvent) -> bool:
        """Would signaling push this event to this participant?"""
        return visible_to(event.data, self.id, self.role, self.on_stage)


HOST = P("host1", "host", "Hanna Host")
COHOST = P("cohost1", "cohost", "Cole Cohost")
PANELIST = P("panel1", "panelist", "Pia Panelist")
ALICE = P("alice", "attendee", "Alice")
BOB = P("bob", "attendee", "Bob")
CAROL = P("carol", "attendee", "Carol")


def chat_settings(nats_url: str, redis_url: str, **overrides: Any) -> ChatSettings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "redis_url": redis_url,
        "chat_rate_limit": 5,
        "chat_rate_window_seconds": 5.0,
        "chat_registry_timeout_seconds": 0.3,
        "chat_webinar_cache_seconds": 10.0,
    }
    values.update(overrides)
    return ChatSettings(**values)


@dataclass
class Events:
    """Every event published on webinar.<id>.>, in arrival order."""

    received: list[CloudEvent] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_msg(self, msg: Msg) -> None:
        self.received.append(CloudEvent.model_validate_json(msg.data))
        self.arrived.set()

    async def next(self, event_type: str, within: float = 5.0, **match: Any) -> CloudEvent:
        """The first event of this type (whose data has these values) not taken yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for i, event in enumerate(self.received):
                if event.event_type == event_type and all(
                    event.data.get(k) == v for k, v in match.items()
                ):
                    return self.received.pop(i)
            self.arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [e.event_type for e in self.received]
                raise AssertionError(f"no {event_type} {match} within {within}s; saw {seen}")
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                pass

    def types(self) -> list[str]:
        return [e.event_type for e in self.received]


@dataclass
class Webinar:
    """One fresh webinar id, a NATS client speaking for signaling, and its events."""

    id: str
    nc: NATS
    events: Events

    async def call(self, op: str, who: P, **args: Any) -> dict[str, Any]:
        payload = {"webinar_id": self.id, "participant": who.ref(), "args": args}
        return await self.raw(op, json.dumps(payload).encode())

    async def raw(self, op: str, data: bytes) -> dict[str, Any]:
        reply = await self.nc.request(chat_command(op), data, timeout=5)
        body: dict[str, Any] = json.loads(reply.data)
        return body

    async def ok(self, op: str, who: P, **args: Any) -> dict[str, Any]:
        body = await self.call(op, who, **args)
        assert body["ok"] is True, body
        return body

    async def fails(self, op: str, who: P, code: str, **args: Any) -> str:
        body = await self.call(op, who, **args)
        assert body["ok"] is False and body["code"] == code, body
        return str(body["message"])


@pytest.fixture
def settings(nats_server: NatsServer, redis_server: RedisServer) -> ChatSettings:
    return chat_settings(nats_server.url, redis_server.url)


@pytest.fixture
async def service(settings: ChatSettings) -> AsyncIterator[ChatService]:
    async with running(settings) as svc:
        yield svc


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.drain()


@pytest.fixture
async def webinar(nc: NATS) -> AsyncIterator[Webinar]:
    wid = uuid.uuid4().hex[:16]
    events = Events()
    sub = await nc.subscribe(f"webinar.{wid}.>", cb=events.on_msg)
    await nc.flush()
    yield Webinar(wid, nc, events)
    await sub.unsubscribe()


@pytest.fixture
async def w(service: ChatService, webinar: Webinar) -> Webinar:
    """A webinar with the chat service running."""
    return webinar
