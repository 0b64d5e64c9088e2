"""Flood control in Redis, so that it holds across replicas: a per-participant rate
limit for everything a participant writes, and the host's optional slow mode."""

import math

import redis.asyncio as aioredis

from services.chat.atomic import Scripts
from services.chat.errors import rate_limited


def _key(webinar_id: str, participant_id: str, kind: str) -> str:
    return f"chat:{{{webinar_id}}}:{kind}:{participant_id}"


class Limits:
    def __init__(self, redis: aioredis.Redis, scripts: Scripts, limit: int, window: float) -> None:
        self.redis = redis
        self.scripts = scripts
        self.limit = limit
        self.window = window

    async def hit(self, webinar_id: str, participant_id: str) -> None:
        """Count one write; `rate_limited` past `limit` in the sliding `window`."""
        key = _key(webinar_id, participant_id, "rate")
        wait = await self.scripts.rate(key, self.window, self.limit)
        if wait is not None:
            raise rate_limited(
                f"at most {self.limit} messages per {self.window:g} s; retry in {math.ceil(wait)} s"
            )

    async def slow_mode(self, webinar_id: str, participant_id: str, seconds: int) -> None:
        """One message per `seconds` for this participant."""
        key = _key(webinar_id, participant_id, "slow")
        if not await self.redis.set(key, "1", nx=True, ex=seconds):
            wait = await self.redis.ttl(key)
            raise rate_limited(f"slow mode: one message every {seconds} s; retry in {wait} s")
