"""Composition root of the restream service: settings, telemetry, broker, stores.

- `create_broker(settings, instance_id)`: the FastStream NATS broker (not started) with a
  handler per `svc.restream.<request type>` (queue group shared by the replicas) and this
  replica's `svc.restream.instance.<id>.stop`.
- `running(settings)`: an async context manager that connects, serves and stops (what
  tests and `create_app` use).
- `create_app(settings)`: /healthz and /metrics, the service in its lifespan;
  `python -m services.restream` serves it on RESTREAM_HOST:RESTREAM_PORT.
"""

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from prometheus_client import REGISTRY

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
from services.common.telemetry import setup_logging, setup_tracing
from services.media import aiortc_adapter
from services.restream.service import Restreamer, instance_stop_subject
from services.restream.settings import RestreamSettings

log = logging.getLogger("restream")
SERVICE = "restream"
RETRY_DELAY = 1.0
# Client request types signaling forwards to `svc.restream.<type>` (CONTRACTS.md).
COMMANDS = ("restream.start", "restream.stop", "recording.start", "recording.stop")
Handler = Callable[[Any], Awaitable[dict[str, Any]]]


def command_subject(op: str) -> str:
    return f"svc.restream.{op}"


def _broker_logger() -> logging.Logger:
    logger = logging.getLogger("restream.broker")
    logger.setLevel(logging.WARNING)
    return logger


def create_broker(settings: RestreamSettings, instance_id: str) -> NatsBroker:
    broker = NatsBroker(
        settings.nats_url,
        name=SERVICE,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        logger=_broker_logger(),
        log_level=logging.DEBUG,
        graceful_timeout=20.0,
        description="Restream (RTMP) and recording (MP4): commands from signaling.",
        middlewares=[
            NatsTelemetryMiddleware(),
            NatsPrometheusMiddleware(
                registry=REGISTRY, app_name=SERVICE, metrics_prefix="webinar_restream"
            ),
        ],
    )

    def restreamer() -> Restreamer:
        service: Restreamer = broker.context.get("restreamer")
        return service

    def command(op: str) -> Handler:
        async def handle(body: Any) -> dict[str, Any]:
            return await restreamer().handle(op, body)

        handle.__name__ = "restream_" + op.replace(".", "_")
        return handle

    for op in COMMANDS:
        broker.subscriber(command_subject(op), queue=settings.restream_queue, max_workers=16)(
            command(op)
        )

    async def forwarded_stop(body: Any) -> dict[str, Any]:
        return await restreamer().stop_forwarded(body)

    broker.subscriber(instance_stop_subject(instance_id), max_workers=16)(forwarded_stop)
    return broker


@dataclass
class RestreamService:
    settings: RestreamSettings
    broker: NatsBroker
    redis: aioredis.Redis
    restreamer: Restreamer

    async def ready(self) -> dict[str, bool]:
        redis_ok = await redis_answers(self.redis)
        return {"nats": await self.broker.ping(timeout=1.0), "redis": redis_ok}


# A harmless command that proves a replica serves requests.
PROBE = json.dumps({"webinar_id": "_probe", "participant": {"role": "attendee"}}).encode()


@asynccontextmanager
async def running(settings: RestreamSettings) -> AsyncIterator[RestreamService]:
    """Connect to Redis and NATS and serve every command; on exit, finish every output
    (recordings are closed properly) and stop."""
    aiortc_adapter.configure_host_addresses(settings.restream_ice_host.split(","))
    instance_id = uuid.uuid4().hex[:12]
    redis = redis_client(settings.redis_url)
    await wait_for_redis(redis, settings.redis_url)
    broker = create_broker(settings, instance_id)
    await connect_broker(broker, settings.nats_url)
    js = broker.connection.jetstream()
    await ensure_events_stream(js)
    outbox = Outbox(redis, js)
    restreamer = Restreamer(broker.connection, redis, outbox, settings, instance_id)
    await restreamer.start()
    broker.context.set_global("restreamer", restreamer)
    drainer = asyncio.create_task(outbox.run(), name="restream-outbox")
    try:
        await broker.start()
        await wait_until_served(broker, command_subject("restream.stop"), PROBE)
        log.info("restream ready: svc.restream.* on %s", settings.nats_url)
        yield RestreamService(settings, broker, redis, restreamer)
    finally:
        await restreamer.stop()
        await broker.stop()
        await cancel_until_done(drainer)
        await redis.aclose()


def create_app(settings: RestreamSettings | None = None) -> FastAPI:
    chosen = settings or RestreamSettings()
    setup_logging(SERVICE, chosen.log_level)
    setup_tracing(SERVICE, chosen.otel_exporter_otlp_endpoint)
    return health_app("Webinar restream", lambda: running(chosen))
