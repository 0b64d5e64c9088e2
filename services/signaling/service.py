"""The signaling service: admits WebSocket clients, runs their requests, and keeps the
room state in Redis honest (grace periods, media node failures)."""

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import nats.errors
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.common.audience import HOST_ROLES, STAGE_ROLES
from services.common.tokens import TokenError, TokenVerifier
from services.signaling.connection import Connection
from services.signaling.handlers import Handlers
from services.signaling.hub import Hub
from services.signaling.media import MediaNodes
from services.signaling.protocol import (
    BAD_TOKEN,
    ENDED,
    FLOOD,
    FULL,
    LOCKED,
    NOT_FOUND,
    REPLACED,
    REVOKED,
    SHUTDOWN,
    UNAVAILABLE,
    Close,
    RequestError,
    TokenBucket,
    error_frame,
    ok_frame,
    request_id,
)
from services.signaling.rooms import Dropped, Ended, Full, Locked, Revoked, RoomStore
from services.signaling.settings import SignalingSettings
from services.signaling.webinars import Webinars, WebinarUnavailable, public_view

log = logging.getLogger("signaling")
tracer = trace.get_tracer("signaling")

CONNECTIONS = Gauge("webinar_signaling_connections", "Open client WebSockets on this replica")
JOINS = Counter("webinar_signaling_joins_total", "Join attempts by outcome", ["outcome"])
REQUESTS = Counter("webinar_signaling_requests_total", "Client requests", ["type", "outcome"])
LATENCY = Histogram("webinar_signaling_request_duration_seconds", "Request handling", ["type"])


class Refused(Exception):
    def __init__(self, why: Close, message: str | None = None) -> None:
        super().__init__(message or why.reason)
        self.why = why
        self.message = message or why.reason


class Signaling:
    def __init__(
        self,
        settings: SignalingSettings,
        nc: NATS,
        redis: aioredis.Redis,
        store: RoomStore,
        verifier: TokenVerifier,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.redis = redis
        self.store = store
        self.verifier = verifier
        self.request_timeout = settings.signaling_request_timeout_seconds
        self.hub = Hub(nc)
        self.media = MediaNodes(
            nc, settings.signaling_media_node_timeout_seconds, self.request_timeout
        )
        self.webinars = Webinars(nc, settings.signaling_webinar_cache_seconds, self.request_timeout)
        self.handlers = Handlers(self)
        self.replica = settings.replica_id()
        # Unique per process start: a restarted replica must not inherit the old one's
        # connection list (which the other replicas retire once it stops beating).
        self.instance = f"{self.replica}-{uuid.uuid4().hex[:8]}"
        self.started_at = time.monotonic()

    # webinar facts --------------------------------------------------------------
    async def webinar(self, webinar_id: str) -> dict[str, Any]:
        try:
            webinar = await self.webinars.get(webinar_id)
        except WebinarUnavailable as exc:
            raise RequestError("unavailable", "the registry is not available") from exc
        if webinar is None:
            raise RequestError("not_found", "webinar not found")
        return webinar

    async def started(self, webinar_id: str) -> bool:
        state = await self.store.state(webinar_id)
        if state.get("started") == "1":
            return True
        webinar = await self.webinar(webinar_id)
        return webinar.get("status") == "live" and state.get("ended") != "1"

    async def origin(self, webinar_id: str) -> str:
        """The webinar's origin media node, chosen once and kept while it lives."""
        current = await self.store.origin(webinar_id)
        warming = time.monotonic() - self.started_at < self.media.timeout
        if current is not None and (self.media.alive(current) or warming):
            return current
        return await self.store.claim_origin(webinar_id, self.media.pick_origin(), current)

    async def leave_media(self, dropped: Dropped) -> None:
        body = {"webinar_id": dropped.webinar_id, "participant_id": dropped.person.id}
        for node in {n for n in dropped.media.values() if n}:
            await self.media.tell(node, "leave", body)

    # connections ----------------------------------------------------------------
    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            conn = await self._admit(ws)
        except Refused as refused:
            JOINS.labels(refused.why.reason).inc()
            await _refuse(ws, refused.why, refused.message)
            return
        JOINS.labels("ok").inc()
        CONNECTIONS.inc()
        sender = asyncio.create_task(conn.sender(), name=f"send-{conn.pid}")
        try:
            await self._receive(conn)
        finally:
            CONNECTIONS.dec()
            await self.hub.detach(conn)
            if conn.closed:
                try:
                    await asyncio.wait_for(sender, 2)
                except (TimeoutError, asyncio.CancelledError):
                    pass
            sender.cancel()
            await self._ended(conn)

    async def _ended(self, conn: Connection) -> None:
        """A connection is gone: start its grace period unless it ended for good."""
        wid, pid, session = conn.webinar_id, conn.pid, conn.session
        try:
            if not conn.final:
                grace = self.settings.signaling_reconnect_grace_seconds
                await self.store.disconnected(wid, pid, session, grace)
            await self.store.untrack(self.instance, wid, pid, session)
        except RedisError as exc:
            log.warning("could not record that %s disconnected: %s", pid, exc)

    async def _admit(self, ws: WebSocket) -> Connection:
        try:
            claims = self.verifier.verify(ws.query_params.get("token", ""))
        except TokenError as exc:
            raise Refused(BAD_TOKEN, str(exc)) from exc
        wid, s = claims.webinar_id, self.settings
        try:
            if await self.store.is_revoked(wid, claims.participant_id):
                raise Refused(REVOKED, "your access to this webinar was revoked")
            webinar = await self.webinars.get(wid)
            if webinar is None:
                raise Refused(NOT_FOUND)
            if webinar.get("status") == "ended":
                raise Refused(ENDED, "this webinar has ended")
            conn = Connection(
                ws,
                claims,
                session=uuid.uuid4().hex,
                bucket=TokenBucket(s.signaling_rate_per_second, s.signaling_rate_burst),
                queue_limit=s.signaling_send_queue,
                mode=str(webinar.get("mode", "webinar")),
            )
            old = await self.hub.attach(conn)
            joined = False
            try:
                capacity = int(webinar.get("capacity", 0))
                resumed = await self.store.join(
                    wid, conn.person, conn.session, capacity, self.instance
                )
                joined = True
                if old is not None:
                    old.close(REPLACED)
                await self.hub.control(wid, "replaced", participant_id=conn.pid,
                                       session=conn.session)  # fmt: skip
                conn.welcome(await self._welcome(conn, webinar, resumed))
            except BaseException:
                await self.hub.detach(conn)
                if joined:  # in the room but never welcomed: let the grace period decide
                    await self._ended(conn)
                raise
        except WebinarUnavailable as exc:
            raise Refused(UNAVAILABLE, "registry unavailable, reconnect shortly") from exc
        except Revoked as exc:
            raise Refused(REVOKED, "your access to this webinar was revoked") from exc
        except Ended as exc:
            raise Refused(ENDED, "this webinar has ended") from exc
        except Locked as exc:
            raise Refused(LOCKED, "the room is locked; ask the host") from exc
        except Full as exc:
            raise Refused(FULL, "the webinar is full (capacity reached)") from exc
        except (RedisError, nats.errors.Error) as exc:
            raise Refused(UNAVAILABLE, "storage unavailable, reconnect shortly") from exc
        log.info("%s %s joined %s (%s)", conn.role, conn.pid, wid, "resumed" if resumed else "new")
        return conn

    async def _welcome(self, conn: Connection, webinar: dict[str, Any], resumed: bool
                       ) -> dict[str, Any]:  # fmt: skip
        wid = conn.webinar_id
        state = await self.store.state(wid)
        conn.on_stage = conn.role in STAGE_ROLES or await self.store.is_promoted(wid, conn.pid)
        started = state.get("started") == "1" or webinar.get("status") == "live"
        s = self.settings
        frame: dict[str, Any] = {
            "type": "welcome",
            "participant": conn.ref(),
            "webinar": {
                **public_view(webinar),
                # The registry learns of the start from the event stream, a moment later.
                "status": "live" if started else webinar.get("status"),
                "started": started,
                "locked": state.get("locked") == "1",
            },
            "lobby": conn.role == "attendee" and not started,
            "resumed": resumed,
            "stage": await self.store.stage(wid),
            "slots": {
                "audio": s.signaling_slots_audio,
                "video": s.signaling_slots_video,
                "screen": s.signaling_slots_screen,
            },
        }
        if conn.role in HOST_ROLES:
            frame["hands"] = await self.store.hands(wid)
        return frame

    async def _receive(self, conn: Connection) -> None:
        while True:
            try:
                message = await conn.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            if conn.closed:
                continue
            text = message.get("text")
            if text is None:
                conn.send(error_frame(None, "invalid", "binary frames are not supported"))
                continue
            await self.handle(conn, text)

    async def handle(self, conn: Connection, text: str) -> None:
        """One text frame from a client: limits, parsing, dispatch, reply."""
        limit = self.settings.signaling_max_frame_bytes
        oversized = len(text) > limit or len(text.encode()) > limit
        frame: Any = None
        if not oversized:
            try:
                frame = json.loads(text)
            except ValueError:
                frame = None
        rid = request_id(frame) if isinstance(frame, dict) else None
        if not conn.bucket.take():
            conn.strikes += 1
            if conn.strikes > self.settings.signaling_flood_close_after:
                conn.close(FLOOD, "too many requests; connection closed")
                return
            REQUESTS.labels("any", "rate_limited").inc()
            conn.send(error_frame(rid, "rate_limited", "too many requests; slow down"))
            return
        conn.strikes = 0
        if oversized:
            conn.send(error_frame(None, "invalid", f"frame larger than {limit} bytes"))
            return
        if not isinstance(frame, dict):
            message = "frame is not JSON" if frame is None else "frame must be a JSON object"
            conn.send(error_frame(None, "invalid", message))
            return
        if rid is None:
            conn.send(error_frame(None, "invalid", "id is required (a number or short string)"))
            return
        kind = frame.get("type")
        handler = self.handlers.find(kind) if isinstance(kind, str) else None
        if handler is None:
            shown = kind[:40] if isinstance(kind, str) else kind
            conn.send(error_frame(rid, "invalid", f"unknown request type {shown!r}"))
            REQUESTS.labels("unknown", "invalid").inc()
            return
        label = str(kind)
        started = time.perf_counter()
        with tracer.start_as_current_span(f"ws {label}") as span:
            span.set_attribute("webinar.request", label)
            try:
                conn.send(ok_frame(rid, await handler(conn, frame)))
                outcome = "ok"
            except RequestError as exc:
                conn.send(error_frame(rid, exc.code, exc.message))
                outcome = exc.code
            except RedisError as exc:
                log.warning("Redis unavailable during %s: %s", label, exc)
                conn.send(error_frame(rid, "unavailable", "storage unavailable, retry shortly"))
                outcome = "unavailable"
            except Exception:  # a bug must not cost the client its connection
                log.exception("request %s failed", label)
                conn.send(error_frame(rid, "unavailable", "internal error, retry shortly"))
                outcome = "error"
        REQUESTS.labels(label, outcome).inc()
        LATENCY.labels(label).observe(time.perf_counter() - started)

    # background -----------------------------------------------------------------
    async def sweep_forever(self) -> None:
        """Participants whose grace period ran out leave for good; replicas that stopped
        beating have their connections put into the grace period."""
        s = self.settings
        beat, registered = 0.0, False
        while True:
            try:
                if time.monotonic() - beat >= 1.0:
                    beat = time.monotonic()
                    if await self.store.replica_alive(self.instance) and registered:
                        # Peers took us for dead (a long stall): our clients' presence may
                        # be gone, so they reconnect and join again.
                        log.warning("replica %s was retired by its peers", self.instance)
                        self.close_all(SHUTDOWN)
                    registered = True
                    await self.store.orphans(
                        s.signaling_replica_timeout_seconds, s.signaling_reconnect_grace_seconds
                    )
                for dropped in await self.store.sweep():
                    log.info("%s left %s", dropped.person.id, dropped.webinar_id)
                    await self.leave_media(dropped)
            except Exception as exc:  # noqa: BLE001 - Redis away: try again soon
                log.warning("presence sweep waiting: %s", exc)
                await asyncio.sleep(1)
            await asyncio.sleep(0.25)

    async def watch_media_forever(self) -> None:
        """Media nodes that stopped sending heartbeats are down: move their clients.
        Nodes that start beating are announced to the live webinars."""
        known: set[str] = set()
        while True:
            await asyncio.sleep(0.25)
            for node in self.media.expired():
                known.discard(node)
                try:
                    await self.media_node_down(node)
                except Exception as exc:  # noqa: BLE001 - keep watching
                    log.warning("handling media node %s down failed: %s", node, exc)
            for node in set(self.media.nodes) - known:
                try:
                    await self.media_node_up(node)
                    known.add(node)
                except Exception as exc:  # noqa: BLE001 - retried on the next round
                    log.warning("announcing media node %s failed: %s", node, exc)

    async def media_node_up(self, node: str) -> None:
        # One replica announces it (the key also ends a previous down period).
        if await self.redis.set(f"sig:media:up:{node}", self.replica, nx=True):
            await self.redis.delete(f"sig:media:down:{node}")
            log.info("media node %s is up", node)
            for webinar_id in await self.store.active_webinars():
                await self.store.media_node_up(webinar_id, node)

    async def media_node_down(self, node: str) -> None:
        log.warning("media node %s is down", node)
        for conn in self.hub.connections():
            publish = conn.publish_node == node
            subscribe = node in (conn.subscribe_node, conn.subscribe_origin)
            if publish or subscribe:
                if publish:
                    conn.publish_node = None
                if subscribe:
                    conn.subscribe_node = conn.subscribe_origin = None
                conn.send({"type": "renegotiate", "node_id": node, "publish": publish,
                           "subscribe": subscribe,
                           "message": "media node went away; publish/subscribe again"})  # fmt: skip
        # One replica records it and publishes the events.
        if await self.redis.set(f"sig:media:down:{node}", self.replica, nx=True, ex=30):
            await self.redis.delete(f"sig:media:up:{node}")
            for webinar_id in await self.store.webinars_on_node(node):
                was_origin = await self.store.clear_origin(webinar_id, node)
                await self.store.forget_node(webinar_id, node)
                await self.store.media_node_down(webinar_id, node, was_origin)

    def close_all(self, why: Close) -> None:
        for conn in self.hub.connections():
            conn.close(why, final=False)


async def _refuse(ws: WebSocket, why: Close, message: str) -> None:
    try:
        await ws.send_text(json.dumps(error_frame(None, why.error, message)))
        await ws.close(why.code, why.reason)
    except Exception as exc:  # noqa: BLE001 - the client is gone already
        log.debug("refusal not delivered: %s", exc)
