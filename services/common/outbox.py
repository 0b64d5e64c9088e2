"""Transactional outbox: events are written to Redis with the state change they
describe, then published to JetStream by a background drainer.

An event is removed from the outbox only after JetStream acknowledged it, so a NATS
outage delays events but never loses them. `Nats-Msg-Id` is the event id, so two
replicas publishing the same entry are deduplicated by the stream.
"""

import asyncio
import contextlib
import json
import logging
from typing import cast

import redis.asyncio as aioredis
from nats.js import JetStreamContext
from opentelemetry import propagate
from redis.asyncio.client import Pipeline

from services.common.events import CloudEvent
from services.common.subjects import webinar_event

log = logging.getLogger(__name__)
OUTBOX_KEY = "outbox:events"
ACK_TIMEOUT = 5.0


class Outbox:
    def __init__(self, redis: aioredis.Redis, js: JetStreamContext, batch: int = 256) -> None:
        self.batch = batch
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
                # asyncio.timeout, not wait_for: wait_for can swallow a cancellation on 3.11.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0.5)

    async def _drain(self) -> bool:
        """Publish queued events oldest first, a batch at a time; True once empty.

        A batch is sent in order with `publish_async` and its acks awaited together;
        entries leave Redis only after JetStream acknowledged them.
        """
        while True:
            raws = cast(list[str], await self._redis.lrange(OUTBOX_KEY, 0, self.batch - 1))
            if not raws:
                return True
            acks = []
            for raw in raws:
                entry = json.loads(raw)
                event = CloudEvent.model_validate(entry["event"])
                headers = dict(entry.get("headers") or {})
                headers["Nats-Msg-Id"] = event.id
                subject = webinar_event(event.subject, event.event_type)
                payload = event.model_dump_json().encode()
                acks.append(await self._js.publish_async(subject, payload, headers=headers))
            async with asyncio.timeout(ACK_TIMEOUT):
                await asyncio.gather(*acks)
            async with self._redis.pipeline(transaction=False) as pipe:
                for raw in raws:
                    pipe.lrem(OUTBOX_KEY, 1, raw)
                await pipe.execute()

    async def pending(self) -> int:
        return int(await self._redis.llen(OUTBOX_KEY))
