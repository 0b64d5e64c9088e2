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
from services.common.broker import (
    cancel_until_done,
    connect_broker,
    health_app,
    wait_until_served,
)
from services.common.connections import (
    ensure_events_stream,
    redis_answers,
    redis_client,
    wait_for_redis,
)
from services.common.outbox import Outbox
from services.common.subjects import chat_command
from services.common.telemetry import setup_logging, setup_tracing

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


# A harmless command that proves a replica serves requests.
PROBE = json.dumps({"webinar_id": "_probe", "participant": {"id": "_probe", "role": "attendee"},
                    "args": {}}).encode()  # fmt: skip


@asynccontextmanager
async def running(settings: ChatSettings) -> AsyncIterator[ChatService]:
    """Connect to Redis and NATS, serve every command, drain the outbox; stop on exit."""
    redis = redis_client(settings.redis_url)
    await wait_for_redis(redis, settings.redis_url)
    broker = create_broker(settings)
    await connect_broker(broker, settings.nats_url)
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
        await wait_until_served(broker, chat_command("qa.list"), PROBE)
        log.info("chat ready: svc.chat.* on %s", settings.nats_url)
        yield ChatService(settings, broker, redis, outbox, chat)
    finally:
        await broker.stop()
        await cancel_until_done(drainer)
        await redis.aclose()


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    chosen = settings or ChatSettings()
    setup_logging(SERVICE, chosen.log_level)
    setup_tracing(SERVICE, chosen.otel_exporter_otlp_endpoint)
    return health_app("Webinar chat", lambda: running(chosen))


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
