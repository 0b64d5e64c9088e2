"""Composition root of a media node: settings, NATS, Redis outbox, the node, HTTP.

`media_node(settings)` is an async context manager that runs a whole node in-process
(what tests and `python -m services.media` use).
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from prometheus_client import Counter, Gauge

from services.common.connections import (
    connect_nats,
    ensure_events_stream,
    redis_client,
    wait_for_redis,
)
from services.common.events import make_event
from services.common.outbox import Outbox
from services.common.subjects import MEDIA_HEARTBEAT
from services.media.node import MediaError, MediaNode, MessageHandler
from services.media.settings import MediaSettings

tracer = trace.get_tracer("media")
log = logging.getLogger("media.service")

SUBSCRIBERS = Gauge("webinar_media_subscribers", "Subscriber connections on this node", ["node"])
PUBLISHERS = Gauge("webinar_media_publishers", "Publisher connections on this node", ["node"])
REQUESTS = Counter(
    "webinar_media_requests_total", "Requests served by the media node API", ["op", "result"]
)
KINDS = ("audio", "video", "screen")
MAX_ID = 200


class NatsBus:
    """The node's view of NATS: request, publish, subscribe."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc

    async def request(self, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        msg = await self.nc.request(subject, json.dumps(payload).encode(), timeout=5)
        reply = json.loads(msg.data)
        return reply if isinstance(reply, dict) else {"ok": False, "message": "bad reply"}

    async def publish(self, subject: str, data: bytes) -> None:
        await self.nc.publish(subject, data)

    async def subscribe(
        self, subject: str, handler: MessageHandler
    ) -> Callable[[], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            try:
                await handler(msg.subject, msg.data)
            except Exception:  # a bad message must not stop the subscription
                log.exception("handling %s failed", msg.subject)

        sub = await self.nc.subscribe(subject, cb=cb)
        await self.nc.flush()
        return sub.unsubscribe


def _text(args: dict[str, Any], name: str, max_len: int = MAX_ID) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise MediaError("invalid", f"{name} must be a non-empty string")
    if any(c in value for c in ". *>\t\r\n"):
        raise MediaError("invalid", f"{name} contains characters not allowed")
    return value


class MediaService:
    """The request-reply API of one node on `svc.media.<node_id>.<op>`."""

    def __init__(self, settings: MediaSettings, nc: NATS, node: MediaNode) -> None:
        self.settings = settings
        self.nc = nc
        self.node = node
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        prefix = f"svc.media.{self.node.node_id}."
        await self.nc.subscribe(prefix + ">", cb=self._dispatch)
        await self.nc.flush()  # the server knows the subscription before we say "ready"

    async def _dispatch(self, msg: Msg) -> None:
        task = asyncio.create_task(self._serve(msg))  # requests run concurrently
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        op = msg.subject.split(".", 3)[-1]
        # Continue the caller's trace: one trace from the WebSocket to this node.
        context = propagate.extract(msg.headers or {})
        with tracer.start_as_current_span(f"media {op}", context=context,
                                          kind=trace.SpanKind.SERVER):  # fmt: skip
            await self._answer(msg, op)

    async def _answer(self, msg: Msg, op: str) -> None:
        try:
            args = json.loads(msg.data or b"{}")
            if not isinstance(args, dict):
                raise MediaError("invalid", "payload must be a JSON object")
            result = await self.handle(op, args)
            body: dict[str, Any] = {"ok": True, **result}
            REQUESTS.labels(op, "ok").inc()
        except json.JSONDecodeError:
            body = {"ok": False, "code": "invalid", "message": "payload is not JSON"}
        except MediaError as exc:
            body = {"ok": False, "code": exc.code, "message": exc.message}
        except Exception as exc:  # reply with the failure, never hang the caller
            log.exception("%s failed", op)
            body = {"ok": False, "code": "unavailable", "message": str(exc)}
        if not body["ok"]:
            REQUESTS.labels(op if op in _OPS else "other", body["code"]).inc()
        if msg.reply:
            await msg.respond(json.dumps(body).encode())

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        if op == "relay.attach":
            return await node.relay_attach(_text(args, "webinar_id"), _text(args, "node_id"))
        if op not in _OPS:
            raise MediaError("not_found", f"unknown operation {op}")
        webinar_id = _text(args, "webinar_id")
        if op == "slots":
            return {"slots": node.slot_map(webinar_id)}
        participant_id = _text(args, "participant_id")
        if op == "publish":
            return {"sdp": await node.publish(webinar_id, participant_id, args.get("sdp"))}  # type: ignore[arg-type]
        if op == "subscribe":
            if node.draining:
                raise MediaError("unavailable", "this media node is draining")
            if node.load()["subscribers"] >= self.settings.media_capacity:
                raise MediaError("unavailable", "this media node is full")
            origin = args.get("origin_node")
            if origin is not None and not isinstance(origin, str):
                raise MediaError("invalid", "origin_node must be a string")
            sdp = args.get("sdp")
            return {"sdp": await node.subscribe(webinar_id, participant_id, sdp, origin)}  # type: ignore[arg-type]
        if op == "unpublish":
            return {"unpublished": await node.unpublish(webinar_id, participant_id)}
        if op == "mute":
            kind = args.get("kind")
            if kind not in KINDS:
                raise MediaError("invalid", "kind must be audio, video or screen")
            muted = args.get("muted", True)
            if not isinstance(muted, bool):
                raise MediaError("invalid", "muted must be true or false")
            await node.mute(webinar_id, participant_id, str(kind), muted)
            return {"muted": muted}
        await node.leave(webinar_id, participant_id)  # op == "leave"
        return {}

    def heartbeat(self) -> dict[str, Any]:
        load = self.node.load()
        SUBSCRIBERS.labels(self.node.node_id).set(load["subscribers"])
        PUBLISHERS.labels(self.node.node_id).set(load["publishers"])
        return {
            "node_id": self.node.node_id,
            "subscribers": load["subscribers"],
            "publishers": load["publishers"],
            "capacity": self.settings.media_capacity,
            "draining": self.node.draining,
            "time": time.time(),
        }

    async def run_heartbeat(self) -> None:
        while True:
            try:
                await self.nc.publish(MEDIA_HEARTBEAT, json.dumps(self.heartbeat()).encode())
            except Exception as exc:  # noqa: BLE001 - NATS away: try again next beat
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.settings.media_heartbeat_interval)


_OPS = {"publish", "subscribe", "unpublish", "mute", "leave", "slots"}


async def _serve_http(settings: MediaSettings, service: MediaService) -> None:
    import uvicorn
    from fastapi import FastAPI

    from services.common.web import add_health_and_metrics

    app = FastAPI(title="Media node", version="1")

    async def ready() -> dict[str, bool]:
        return {"nats": service.nc.is_connected, "accepting": not service.node.draining}

    add_health_and_metrics(app, ready)
    config = uvicorn.Config(
        app,
        host=settings.media_http_host,
        port=settings.media_http_port,
        log_config=None,
        lifespan="off",
    )
    await uvicorn.Server(config).serve()


@contextlib.asynccontextmanager
async def media_node(settings: MediaSettings | None = None) -> AsyncIterator[MediaService]:
    """Run one media node until the block exits."""
    settings = settings or MediaSettings()
    redis = redis_client(settings.redis_url)
    await wait_for_redis(redis, settings.redis_url)
    nc = await connect_nats(settings.nats_url, f"media-{settings.media_node_id}")
    js = nc.jetstream()
    await ensure_events_stream(js)
    outbox = Outbox(redis, js)
    source = f"media/{settings.media_node_id}"

    async def slots_changed(webinar_id: str, slots: dict[str, dict[str, str] | None]) -> None:
        try:
            await outbox.add(make_event("slots.changed", webinar_id, {"slots": slots}, source))
        except Exception as exc:  # noqa: BLE001 - Redis away: `.slots` still answers
            log.warning("slots.changed for %s not queued: %s", webinar_id, exc)

    node = MediaNode(settings, NatsBus(nc), slots_changed)
    await node.start()
    service = MediaService(settings, nc, node)
    await service.start()
    tasks = [
        asyncio.create_task(outbox.run(), name="outbox"),
        asyncio.create_task(service.run_heartbeat(), name="heartbeat"),
    ]
    if settings.media_http_port:
        tasks.append(asyncio.create_task(_serve_http(settings, service), name="http"))
    log.info("media node %s ready (ICE hosts %s)", node.node_id, settings.ice_hosts)
    try:
        yield service
    finally:
        await node.close()
        await _stop(tasks)
        with contextlib.suppress(Exception):
            await nc.drain()
        await redis.aclose()


async def _stop(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel until done: on Python 3.11 `asyncio.wait_for` (used by Outbox.run) can
    swallow a cancellation that races with its inner future, and the loop goes on."""
    for _ in range(50):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    log.warning("tasks still running at shutdown: %s", [t.get_name() for t in tasks])


async def run(settings: MediaSettings, stop: asyncio.Event) -> None:
    async with media_node(settings) as service:
        await stop.wait()
        service.node.draining = True
        await service.nc.publish(MEDIA_HEARTBEAT, json.dumps(service.heartbeat()).encode())
        for _ in range(60):  # up to 30 s for viewers to move elsewhere
            if not service.node.load()["subscribers"]:
                break
            await asyncio.sleep(0.5)
