"""What every FastStream service (chat, restream) does around its NATS broker: connect
with retries, wait until its commands are served, stop a background task for sure, and
expose /healthz and /metrics around the running service."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, TypeVar

import nats.errors
from fastapi import FastAPI
from faststream.nats import NatsBroker

from services.common.web import add_health_and_metrics

log = logging.getLogger(__name__)
RETRY_DELAY = 1.0


async def connect_broker(broker: NatsBroker, url: str) -> None:
    """Connect, retrying until NATS answers (the broker reconnects by itself after)."""
    attempt = 0
    while True:
        try:
            await broker.connect()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not there yet"
            attempt += 1
            log.warning("NATS at %s not reachable (%s); retry %d", url, exc, attempt)
            await asyncio.sleep(RETRY_DELAY)


async def wait_until_served(broker: NatsBroker, subject: str, payload: bytes) -> None:
    """Return once a request on `subject` reaches a replica: right after subscribing,
    the server can answer "no responders" for a moment."""
    for _ in range(100):
        try:
            await broker.connection.request(subject, payload, timeout=1.0)
            return
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.05)
        except nats.errors.TimeoutError:
            return  # busy rather than absent


async def cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel until the task is really done (a cancellation can land as an inner wait
    completes and be lost)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)


class Service(Protocol):
    async def ready(self) -> dict[str, bool]: ...


S = TypeVar("S", bound=Service)


def health_app(title: str, running: Callable[[], AbstractAsyncContextManager[S]]) -> FastAPI:
    """A FastAPI app that runs the service in its lifespan and serves /healthz, /metrics."""
    state: dict[str, S] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running() as service:
            state["service"] = service
            yield
            state.clear()

    app = FastAPI(title=title, version="1", lifespan=lifespan)

    async def ready() -> dict[str, bool]:
        service = state.get("service")
        if service is None:
            return {"nats": False, "redis": False}
        return await service.ready()

    add_health_and_metrics(app, ready)
    return app
