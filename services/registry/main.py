"""Composition root of the registry: settings, connections, store, routes."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common.connections import (
    connect_nats,
    ensure_events_stream,
    redis_answers,
    redis_client,
    shutdown,
    wait_for_redis,
)
from services.common.outbox import Outbox
from services.common.subjects import REGISTRY_WEBINAR_GET
from services.common.telemetry import setup_logging, setup_tracing
from services.common.tokens import TokenIssuer
from services.common.web import (
    BodySizeLimit,
    TracingMiddleware,
    add_health_and_metrics,
    install_error_handlers,
)
from services.registry.api import Registry, router
from services.registry.attendance import Attendance
from services.registry.settings import DEV_ADMIN_KEY, RegistrySettings
from services.registry.store import RegistryStore

log = logging.getLogger("registry")


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    setup_logging("registry", settings.log_level)
    setup_tracing("registry", settings.otel_exporter_otlp_endpoint)
    issuer = TokenIssuer(settings.private_key_pem())
    state: dict[str, NATS] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = redis_client(settings.redis_url)
        await wait_for_redis(redis, settings.redis_url)
        nc = await connect_nats(settings.nats_url, "registry")
        state["nats"] = nc
        js = nc.jetstream()
        await ensure_events_stream(js)
        outbox = Outbox(redis, js)
        store = RegistryStore(redis, outbox)
        attendance = Attendance(redis, store)
        app.state.registry = Registry(settings, store, issuer, attendance)
        if settings.webinar_admin_key == DEV_ADMIN_KEY:
            log.warning("using the development organizer key; set WEBINAR_ADMIN_KEY in production")
        tasks = [
            asyncio.create_task(outbox.run(), name="outbox"),
            asyncio.create_task(attendance.run(js), name="attendance"),
        ]
        await nc.subscribe(REGISTRY_WEBINAR_GET, queue="registry", cb=_webinar_responder(store))
        log.info("registry ready on http://%s:%d", settings.registry_host, settings.registry_port)
        try:
            yield
        finally:
            await shutdown(tasks, nc, redis)

    app = FastAPI(title="Webinar registry", version="1", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(TracingMiddleware, service="registry")
    # The web client (registration page) is served by signaling on another origin.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.public_web_url.rstrip("/")],
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type"],
    )
    install_error_handlers(app)
    app.include_router(router)

    async def ready() -> dict[str, bool]:
        nc = state.get("nats")
        reg: Registry | None = getattr(app.state, "registry", None)
        redis_ok = await redis_answers(reg.store.redis if reg else None)
        return {"nats": bool(nc and nc.is_connected), "redis": redis_ok}

    add_health_and_metrics(app, ready)
    return app


def _webinar_responder(store: RegistryStore):  # type: ignore[no-untyped-def]
    """svc.registry.webinar.get {webinar_id} -> {webinar} for other services."""

    async def respond(msg: Msg) -> None:
        try:
            webinar_id = str(json.loads(msg.data)["webinar_id"])
            webinar = await store.get_webinar(webinar_id)
            body = (
                {"webinar": webinar.model_dump(mode="json")} if webinar else {"error": "not_found"}
            )
        except Exception as exc:  # noqa: BLE001 - reply with the failure, never hang the caller
            body = {"error": "invalid", "message": str(exc)}
        await msg.respond(json.dumps(body).encode())

    return respond
