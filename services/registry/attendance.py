"""The attendance report, fed by participant, hand and Q&A events from JetStream."""

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

import nats.errors
import redis.asyncio as aioredis
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import BaseModel

from services.common.events import CloudEvent
from services.common.subjects import EVENTS_STREAM
from services.registry.models import Status
from services.registry.store import RegistryStore

log = logging.getLogger(__name__)
TRACKED = {"participant.joined", "participant.left", "hand.raised", "qa.asked",
           "webinar.started", "webinar.ended"}  # fmt: skip


class Session(BaseModel):
    joined_at: datetime
    left_at: datetime | None = None


class Attendee(BaseModel):
    participant_id: str
    name: str
    role: str
    sessions: list[Session] = []
    hands_raised: int = 0
    questions: list[str] = []

    @property
    def seconds(self) -> float:
        return sum(
            ((s.left_at or s.joined_at) - s.joined_at).total_seconds() for s in self.sessions
        )


def _key(webinar_id: str) -> str:
    return f"wb:{webinar_id}:attendance"


class Attendance:
    def __init__(self, redis: aioredis.Redis, store: RegistryStore) -> None:
        self.redis = redis
        self.store = store

    async def run(self, js: JetStreamContext) -> None:
        """Consume the event stream with a durable pull consumer shared by all replicas."""
        sub = None
        while True:
            try:
                if sub is None:
                    sub = await js.pull_subscribe(
                        "webinar.>", durable="registry-attendance", stream=EVENTS_STREAM
                    )
                for msg in await sub.fetch(batch=100, timeout=1):
                    await self.handle(msg)
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - NATS or Redis away: keep trying
                log.warning("attendance consumer waiting: %s", exc)
                await asyncio.sleep(1)

    async def handle(self, msg: Msg) -> None:
        try:
            event = CloudEvent.model_validate_json(msg.data)
        except ValueError:
            log.warning("ignoring malformed event on %s", msg.subject)
            await msg.ack()
            return
        if event.event_type in TRACKED:
            await self.apply(event)
        await msg.ack()

    async def apply(self, event: CloudEvent) -> None:
        kind, wid, data = event.event_type, event.subject, event.data
        if kind == "webinar.started":
            await self.store.set_status(wid, Status.LIVE)
            return
        if kind == "webinar.ended":
            await self.store.set_status(wid, Status.ENDED)
            return
        pid = str(data.get("participant_id", ""))
        if not pid:
            return
        attendee = await self._load(wid, pid, data)
        if kind == "participant.joined":
            attendee.sessions.append(Session(joined_at=event.time))
        elif kind == "participant.left" and attendee.sessions:
            if attendee.sessions[-1].left_at is None:
                attendee.sessions[-1].left_at = event.time
        elif kind == "hand.raised":
            attendee.hands_raised += 1
        elif kind == "qa.asked":
            attendee.questions.append(str(data.get("text", ""))[:1000])
        await self.redis.hset(_key(wid), pid, attendee.model_dump_json())

    async def _load(self, wid: str, pid: str, data: dict[str, Any]) -> Attendee:
        raw = await self.redis.hget(_key(wid), pid)
        if raw:
            return Attendee.model_validate_json(raw)
        return Attendee(
            participant_id=pid, name=str(data.get("name", "")), role=str(data.get("role", ""))
        )

    async def report(self, webinar_id: str) -> list[dict[str, Any]]:
        rows = []
        emails = {r.id: r.email for r in await self.store.list_registrations(webinar_id)}
        emails |= {p.id: p.email for p in await self.store.list_panelists(webinar_id)}
        for raw in (await self.redis.hgetall(_key(webinar_id))).values():
            a = Attendee.model_validate_json(raw)
            first = min((s.joined_at for s in a.sessions), default=None)
            lefts = [s.left_at for s in a.sessions if s.left_at]
            rows.append({
                "participant_id": a.participant_id, "name": a.name, "role": a.role,
                "email": emails.get(a.participant_id),
                "first_joined_at": first, "last_left_at": max(lefts, default=None),
                "attended_seconds": round(a.seconds, 1),
                "sessions": [json.loads(s.model_dump_json()) for s in a.sessions],
                "hands_raised": a.hands_raised, "questions": a.questions,
            })  # fmt: skip
        return sorted(rows, key=lambda r: str(r["first_joined_at"] or ""))
