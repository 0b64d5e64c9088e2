"""The whole chat path, end to end and all real: WebSocket clients -> two signaling
replicas -> the chat service (in-process) -> Redis and JetStream -> the clients.

NATS, Redis and the registry are the session's (tests/conftest.py and
tests/signaling/conftest.py); the signaling replicas and their WebSocket client helpers
come from tests/signaling/conftest.py, the chat service's settings from
tests/chat/conftest.py. Nothing is a test double.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.chat.main import ChatService, running
from services.chat.settings import ChatSettings
from tests.chat import conftest as chat_conftest
from tests.infra import NatsServer, RedisServer
from tests.signaling import conftest as signaling_conftest
from tests.signaling.conftest import Client, Room, Stack, running_stack

# The session's registry (a fixture shared with the signaling tests).
registry_url = signaling_conftest.registry_url


class ChatUnderTest:
    """The real chat service, running in this event loop until stopped."""

    def __init__(self, settings: ChatSettings) -> None:
        self.settings = settings
        self.service: ChatService | None = None
        self._running: contextlib.AbstractAsyncContextManager[ChatService] | None = None

    async def start(self) -> None:
        assert self._running is None, "already running"
        self._running = running(self.settings)
        self.service = await self._running.__aenter__()

    async def stop(self) -> None:
        if self._running is not None:
            running_, self._running, self.service = self._running, None, None
            await running_.__aexit__(None, None, None)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest.fixture
async def chat(nats_server: NatsServer, redis_server: RedisServer) -> AsyncIterator[ChatUnderTest]:
    """The chat service with the limits of the chat tests (5 messages per 5 s)."""
    under_test = ChatUnderTest(chat_conftest.chat_settings(nats_server.url, redis_server.url))
    await under_test.start()
    try:
        yield under_test
    finally:
        await under_test.stop()


@pytest.fixture
async def stack(nats_server, redis_server, keypair, registry_url, chat) -> AsyncIterator[Stack]:
    """Registry, two signaling replicas and the chat service; clients via `stack.join`."""
    async with running_stack(nats_server.url, redis_server.url, keypair, registry_url) as s:
        yield s


@pytest.fixture
async def room(stack: Stack) -> Room:
    """A fresh webinar (anonymous questions allowed) on the stack."""
    return await stack.webinar(allow_anonymous_questions=True)


async def everyone_saw(clients: list[Client], sender: Client, text: str) -> dict[str, Any]:
    """`sender` says `text` to everyone and every client receives it: whatever was sent
    before has arrived by then (the outbox publishes a webinar's events in order, and each
    replica pushes them in arrival order), so what a client lacks it never gets."""
    reply = await sender.ok("chat.send", text=text, to="everyone")
    for client in clients:
        await client.event("chat.message", text=text)
    return reply["message"]


def chat_texts(client: Client) -> list[str]:
    """The chat messages pushed to this client, in arrival order."""
    return [m["text"] for m in client.events("chat.message")]


async def history(client: Client) -> list[str]:
    """The texts of the chat history this client gets, oldest first."""
    reply = await client.ok("chat.history")
    return [m["text"] for m in reply["messages"]]
