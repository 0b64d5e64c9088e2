"""Transactional outbox: events are written to Redis with the state change they
describe, then published to JetStream by a background drainer.

An event is removed from the outbox only after JetStream acknowledged it, so a NATS
outage delays events but never loses them. `Nats-Msg-Id` is the event id, so two
replicas publishing the same entry are deduplicated by the stream.
"""

import asyncio
import json
import logging

import redis.asyncio as aioredis
from nats.js import JetStreamContext
from opentelemetry import propagate
from redis.asyncio.client import Pipeline

from services.common.events import CloudEvent
from services.common.subjects import webinar_event

log = logging.getLogger(__name__)
OUTBOX_KEY = "outbox:events"


class Outbox:
    def __init__(self, redis: aioredis.Redis, js: JetStreamContext) -> None:
        self._redis = redis
        self._js = js
        self._wake = asyncio.Event()

    def stage(self, pipe: Pipeline, event: CloudEvent) -> None:
        """Add the event to a MULTI pipeline that also holds the state change."""
        headers: dict[str, str] = {}
        propagate.inject(headers)
        entry = {"event": event.model_dump(mode="json"), "headers": headers}
        pipe.rpush(OUTBOX_KEY, json.dumps(entry))

    async def add(self, event: CloudEvent) -> None:
        """Queue an event that has no state change beside it."""
        async with self._redis.pipeline(transaction=True) as pipe:
            self.stage(pipe, event)
            await pipe.execute()
        self.notify()

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                drained = await self._drain()
            except Exception as exc:  # noqa: BLE001 - Redis or NATS away: try again soon
                log.warning("event outbox waiting: %s", exc)
                drained = False
            if drained:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0.5)

    async def _drain(self) -> bool:
        """Publish queued events oldest first; True once the outbox is empty."""
        while True:
            raw = await self._redis.lindex(OUTBOX_KEY, 0)
            if raw is None:
                return True
            entry = json.loads(raw)
            event = CloudEvent.model_validate(entry["event"])
            headers = dict(entry.get("headers") or {})
            headers["Nats-Msg-Id"] = event.id
            await self._js.publish(
                webinar_event(event.subject, event.event_type),
                event.model_dump_json().encode(),
                headers=headers,
                timeout=2,
            )
            await self._redis.lrem(OUTBOX_KEY, 1, str(raw))

    async def pending(self) -> int:
        return int(await self._redis.llen(OUTBOX_KEY))
