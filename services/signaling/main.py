"""Composition root of signaling: settings, connections, store, WebSocket route."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket

from services.common.connections import (
    connect_nats,
    ensure_events_stream,
    redis_answers,
    redis_client,
    shutdown,
    wait_for_redis,
)
from services.common.outbox import Outbox
from services.common.telemetry import setup_logging, setup_tracing
from services.common.tokens import TokenVerifier
from services.common.web import add_health_and_metrics
from services.signaling.protocol import SHUTDOWN
from services.signaling.rooms import RoomStore
from services.signaling.service import Signaling
from services.signaling.settings import SignalingSettings
from services.signaling.web import add_web_client

log = logging.getLogger("signaling")


def create_app(settings: SignalingSettings | None = None) -> FastAPI:
    settings = settings or SignalingSettings()
    setup_logging("signaling", settings.log_level)
    setup_tracing("signaling", settings.otel_exporter_otlp_endpoint)
    verifier = TokenVerifier(settings.public_key_pem())
    replica = settings.replica_id()
    holder: dict[str, Signaling] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = redis_client(settings.redis_url)
        await wait_for_redis(redis, settings.redis_url)
        nc = await connect_nats(settings.nats_url, f"signaling-{replica}")
        js = nc.jetstream()
        await ensure_events_stream(js)
        outbox = Outbox(redis, js)
        store = RoomStore(redis, outbox, f"/services/signaling/{replica}")
        svc = Signaling(settings, nc, redis, store, verifier)
        await svc.media.start()
        holder["svc"] = svc
        app.state.signaling = svc
        tasks = [
            asyncio.create_task(outbox.run(), name="outbox"),
            asyncio.create_task(svc.sweep_forever(), name="presence-sweep"),
            asyncio.create_task(svc.watch_media_forever(), name="media-watch"),
        ]
        log.info("signaling %s ready on ws://%s:%d/v1/ws", replica, settings.signaling_host,
                 settings.signaling_port)  # fmt: skip
        try:
            yield
        finally:
            # Clients still here are told to reconnect (to another replica); their grace
            # period starts so they resume without left/joined.
            if any(True for _ in svc.hub.connections()):
                svc.close_all(SHUTDOWN)
                await asyncio.sleep(0.2)  # let their handlers record the disconnect
            try:
                await store.retire(svc.instance, settings.signaling_reconnect_grace_seconds)
            except Exception as exc:  # noqa: BLE001 - Redis away: peers time us out
                log.warning("could not deregister replica %s: %s", replica, exc)
            await shutdown(tasks, nc, redis)

    app = FastAPI(title="Webinar signaling", version="1", lifespan=lifespan)

    @app.websocket("/v1/ws")
    async def client_socket(ws: WebSocket) -> None:
        """The client protocol of DESIGN.md section 3, "Client WebSocket"."""
        await holder["svc"].serve(ws)

    async def ready() -> dict[str, bool]:
        svc = holder.get("svc")
        redis_ok = await redis_answers(svc.redis if svc else None)
        return {"nats": bool(svc and svc.nc.is_connected), "redis": redis_ok}

    add_health_and_metrics(app, ready)
    add_web_client(app, settings)
    return app
