"""Composition root of the chat service: settings, telemetry, broker, router, stores.

- `create_broker(settings)`: the FastStream NATS broker with every handler (not started).
- `running(settings)`: an async context manager that connects, serves and stops; what
  tests and `create_app` use.
- `create_app(settings)`: /healthz and /metrics over HTTP, the service in its lifespan;
  `python -m services.chat` serves it on CHAT_HOST:CHAT_PORT.
- `asyncapi_app()`: the documented app for `faststream docs gen --factory`; see
  `services/chat/asyncapi.json` and `tests/chat/test_asyncapi.py`.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import nats.errors
import redis.asyncio as aioredis
from fastapi import FastAPI
from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.specification import AsyncAPI
from prometheus_client import REGISTRY
from pydantic import BaseModel, create_model

from services.chat.atomic import Scripts
from services.chat.handlers import Chat, create_router
from services.chat.limits import Limits
from services.chat.messages import Messages
from services.chat.models import (
    ChatDeleted,
    ChatMessage,
    ChatToggled,
    PollView,
    PollVotes,
    Question,
    QuestionDismissed,
    QuestionVotes,
)
from services.chat.polls import Polls
from services.chat.questions import Questions
from services.chat.settings import ChatSettings
from services.chat.webinars import Webinars
from services.common.connections import (
    ensure_events_stream,
    redis_answers,
    redis_client,
    wait_for_redis,
)
from services.common.outbox import Outbox
from services.common.subjects import chat_command
from services.common.telemetry import setup_logging, setup_tracing
from services.common.web import add_health_and_metrics

log = logging.getLogger("chat")
SERVICE = "chat"
RETRY_DELAY = 1.0
DOCS_NATS_URL = "nats://127.0.0.1:4222"

# The public events this service publishes (through the outbox, to JetStream).
EVENTS: dict[str, tuple[type[BaseModel], str]] = {
    "chat.message": (ChatMessage, "A chat message; `audience` says who may see it."),
    "chat.deleted": (ChatDeleted, "A host deleted a message: every client removes it."),
    "chat.disabled": (ChatToggled, "A host disabled the chat for attendees."),
    "chat.enabled": (ChatToggled, "A host enabled the chat for attendees again."),
    "qa.asked": (Question, "A new question (participant_id and name null if anonymous)."),
    "qa.upvoted": (QuestionVotes, "A question's vote count changed."),
    "qa.answered": (Question, "A speaker answered a question, in text or live."),
    "qa.dismissed": (QuestionDismissed, "A speaker dismissed a question."),
    "poll.opened": (PollView, "A host opened a poll."),
    "poll.voted": (PollVotes, "Someone voted; audience `hosts` when results are hosts-only."),
    "poll.closed": (PollView, "A host closed a poll; counts only when results are public."),
}


class EventEnvelope(BaseModel):
    """CloudEvents 1.0 envelope; `traceparent` travels in the NATS headers."""

    specversion: str = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str
    datacontenttype: str = "application/json"


def _envelope(event_type: str, data: type[BaseModel]) -> type[BaseModel]:
    name = "".join(part.title() for part in event_type.split(".")) + "Event"
    model: type[BaseModel] = create_model(name, __base__=EventEnvelope, data=(data, ...))
    return model


def _broker_logger() -> logging.Logger:
    logger = logging.getLogger("chat.broker")
    logger.setLevel(logging.WARNING)
    return logger


def create_broker(settings: ChatSettings) -> NatsBroker:
    broker = NatsBroker(
        settings.nats_url,
        name=SERVICE,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        # FastStream logs every message (at log_level) and its worker tasks at INFO.
        logger=_broker_logger(),
        log_level=logging.DEBUG,
        graceful_timeout=10.0,
        specification_url=DOCS_NATS_URL,
        description="Chat, Q&A and polls: commands from signaling, events to integrators.",
        middlewares=[
            NatsTelemetryMiddleware(),
            NatsPrometheusMiddleware(
                registry=REGISTRY, app_name=SERVICE, metrics_prefix="webinar_chat"
            ),
        ],
    )
    broker.include_router(create_router(settings.chat_queue, settings.chat_max_workers))
    for event_type, (data, description) in EVENTS.items():
        broker.publisher(
            f"webinar.{{webinar_id}}.{event_type}",
            title=f"io.webinar.{event_type}.v1",
            description=description,
            schema=_envelope(event_type, data),
        )
    return broker


@dataclass
class ChatService:
    """A running chat service."""

    settings: ChatSettings
    broker: NatsBroker
    redis: aioredis.Redis
    outbox: Outbox
    chat: Chat

    async def ready(self) -> dict[str, bool]:
        redis_ok = await redis_answers(self.redis)
        return {"nats": await self.broker.ping(timeout=1.0), "redis": redis_ok}


async def _connect(broker: NatsBroker, url: str) -> None:
    attempt = 0
    while True:
        try:
            await broker.connect()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not there yet"
            attempt += 1
            log.warning("NATS at %s not reachable (%s); retry %d", url, exc, attempt)
            await asyncio.sleep(RETRY_DELAY)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel until it is done: on Python 3.11 `asyncio.wait_for` (which Outbox.run uses)
    can swallow a cancellation that lands as its inner wait completes."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)


async def _wait_reachable(broker: NatsBroker) -> None:
    """Return once a command reaches a chat service (this one or another replica): the
    server can answer "no responders" for a moment after the subscriptions are sent."""
    probe = chat_command("qa.list")
    command = {"webinar_id": "_probe", "participant": {"id": "_probe", "role": "attendee"}}
    payload = json.dumps(command | {"args": {}}).encode()
    for _ in range(100):
        try:
            await broker.connection.request(probe, payload, timeout=1.0)
            return
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.05)
        except nats.errors.TimeoutError:
            return  # busy rather than absent


@asynccontextmanager
async def running(settings: ChatSettings) -> AsyncIterator[ChatService]:
    """Connect to Redis and NATS, serve every command, drain the outbox; stop on exit."""
    redis = redis_client(settings.redis_url)
    await wait_for_redis(redis, settings.redis_url)
    broker = create_broker(settings)
    await _connect(broker, settings.nats_url)
    js = broker.connection.jetstream()
    await ensure_events_stream(js)
    outbox = Outbox(redis, js)
    scripts = Scripts(redis, outbox)
    limits = Limits(redis, scripts, settings.chat_rate_limit, settings.chat_rate_window_seconds)
    webinars = Webinars(
        broker.connection,
        settings.chat_webinar_cache_seconds,
        settings.chat_registry_timeout_seconds,
    )
    chat = Chat(
        redis,
        Messages(redis, outbox, limits, settings.chat_history_max),
        Questions(redis, outbox, scripts, limits, webinars),
        Polls(redis, outbox, scripts),
    )
    broker.context.set_global("chat", chat)
    drainer = asyncio.create_task(outbox.run(), name="chat-outbox")
    try:
        await broker.start()
        await _wait_reachable(broker)
        log.info("chat ready: svc.chat.* on %s", settings.nats_url)
        yield ChatService(settings, broker, redis, outbox, chat)
    finally:
        await broker.stop()
        await _cancel(drainer)
        await redis.aclose()


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    settings = settings or ChatSettings()
    setup_logging(SERVICE, settings.log_level)
    setup_tracing(SERVICE, settings.otel_exporter_otlp_endpoint)
    state: dict[str, ChatService] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(settings) as service:
            state["service"] = service
            yield
            state.clear()

    app = FastAPI(title="Webinar chat", version="1", lifespan=lifespan)

    async def ready() -> dict[str, bool]:
        service = state.get("service")
        if service is None:
            return {"nats": False, "redis": False}
        return await service.ready()

    add_health_and_metrics(app, ready)
    return app


def asyncapi_app() -> FastStream:
    """The app `faststream docs gen --factory services.chat.main:asyncapi_app` documents."""
    broker = create_broker(ChatSettings(nats_url=DOCS_NATS_URL))
    return FastStream(
        broker,
        specification=AsyncAPI(
            title="Webinar chat service",
            version="1",
            description=(
                "Commands on svc.chat.<request type> (request-reply, internal; replies are "
                '{"ok": true, ...} or {"ok": false, "code", "message"}) and the public '
                "events it publishes on webinar.<webinar_id>.<event type>."
            ),
        ),
    )
