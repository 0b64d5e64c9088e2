"""Local connections of this replica and the NATS subjects that feed them.

For every webinar with local clients the hub subscribes to
- `webinar.<id>.>`: the public events, fanned out to local clients by audience
  (CONTRACTS.md, "Audience of an event"); events are deduplicated by id because two
  outbox drainers may both publish the same entry;
- `svc.signaling.control.<id>`: direct commands between replicas (see `control`).
"""

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter

from services.common.events import CloudEvent
from services.signaling.connection import Connection
from services.signaling.protocol import (
    DELETED,
    ENDED,
    REMOVED,
    REPLACED,
    REVOKED,
    Close,
    event_frame,
)

log = logging.getLogger(__name__)
EVENTS_DELIVERED = Counter(
    "webinar_signaling_events_delivered_total", "Event frames queued to clients"
)
SEEN_EVENTS = 4096


def control_subject(webinar_id: str) -> str:
    return f"svc.signaling.control.{webinar_id}"


class Hub:
    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self.rooms: dict[str, dict[str, Connection]] = {}
        self._subs: dict[str, list[Subscription]] = {}
        self._lock = asyncio.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()

    def connections(self) -> Iterator[Connection]:
        for room in list(self.rooms.values()):
            yield from list(room.values())

    async def attach(self, conn: Connection) -> Connection | None:
        """Add a connection; returns an older local connection of the same participant."""
        async with self._lock:
            wid = conn.webinar_id
            if wid not in self._subs:
                self._subs[wid] = [
                    await self._nc.subscribe(f"webinar.{wid}.>", cb=self._on_event),
                    await self._nc.subscribe(control_subject(wid), cb=self._on_control),
                ]
            room = self.rooms.setdefault(wid, {})
            old = room.get(conn.pid)
            room[conn.pid] = conn
            return old

    async def detach(self, conn: Connection) -> None:
        async with self._lock:
            wid = conn.webinar_id
            room = self.rooms.get(wid, {})
            if room.get(conn.pid) is conn:
                del room[conn.pid]
            if not room:
                self.rooms.pop(wid, None)
                for sub in self._subs.pop(wid, []):
                    try:
                        await sub.unsubscribe()
                    except Exception as exc:  # noqa: BLE001 - NATS away: nothing to undo
                        log.debug("unsubscribe failed: %s", exc)

    # events -------------------------------------------------------------------
    async def _on_event(self, msg: Msg) -> None:
        try:
            event = CloudEvent.model_validate_json(msg.data)
        except ValueError:
            log.warning("ignoring malformed event on %s", msg.subject)
            return
        if event.id in self._seen:
            return
        self._seen[event.id] = None
        if len(self._seen) > SEEN_EVENTS:
            self._seen.popitem(last=False)
        self.deliver(event)

    def deliver(self, event: CloudEvent) -> None:
        kind, data = event.event_type, event.data
        room = self.rooms.get(event.subject, {})
        target = room.get(str(data.get("participant_id", "")))
        if target is not None and kind in ("participant.promoted", "participant.demoted"):
            target.on_stage = kind == "participant.promoted"
        frame = event_frame(kind, data, event.id, event.time.isoformat())
        if kind == "webinar.ended":  # usually the `end` control command was first
            for conn in list(room.values()):
                conn.close(ENDED, frames=[frame])
            return
        for conn in list(room.values()):
            if conn.wants(kind, data):
                conn.send(frame)
                EVENTS_DELIVERED.inc()
        if kind == "webinar.deleted":
            for conn in list(room.values()):
                conn.close(DELETED, final=False)
        elif kind == "participant.removed" and target is not None:
            target.close(REMOVED)
        elif kind == "registration.rejected" and target is not None:
            # The registry revoked this attendee; the grace period then ends their presence.
            target.close(REVOKED, final=False)

    # control ------------------------------------------------------------------
    async def control(self, webinar_id: str, op: str, **fields: Any) -> None:
        """Tell every replica with clients of this webinar (including this one).

        ops: `notify` {participant_id, notice, data, on_stage?} sends a `notice` frame;
        `disconnect` {participant_id, code, reason, error, message} closes the socket;
        `replaced` {participant_id, session} closes older connections of a participant;
        `end` {data} closes everyone with the `webinar.ended` event as last frame.
        """
        body = json.dumps({"op": op, **fields}).encode()
        await self._nc.publish(control_subject(webinar_id), body)

    async def _on_control(self, msg: Msg) -> None:
        try:
            cmd = json.loads(msg.data)
            op = cmd["op"]
            webinar_id = msg.subject.rsplit(".", 1)[1]
        except (ValueError, KeyError, IndexError):
            log.warning("ignoring malformed control message on %s", msg.subject)
            return
        room = self.rooms.get(webinar_id, {})
        if op == "end":
            frame = event_frame("webinar.ended", cmd.get("data", {}), "", cmd.get("time", ""))
            for conn in list(room.values()):
                conn.close(ENDED, frames=[frame])
            return
        found = room.get(str(cmd.get("participant_id", "")))
        if found is None:
            return
        conn = found
        if op == "notify":
            if "on_stage" in cmd:
                conn.on_stage = bool(cmd["on_stage"])
            conn.send({"type": "notice", "notice": cmd.get("notice"), "data": cmd.get("data", {})})
        elif op == "disconnect":
            why = Close(int(cmd["code"]), str(cmd["reason"]), str(cmd.get("error", "forbidden")))
            conn.close(why, cmd.get("message"))
        elif op == "replaced" and conn.session != cmd.get("session"):
            conn.close(REPLACED)
