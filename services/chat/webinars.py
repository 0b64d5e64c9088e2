"""What the chat needs to know about a webinar, asked of the registry over NATS."""

import json
import logging
import time

from nats.aio.client import Client as NATS

from services.common.subjects import REGISTRY_WEBINAR_GET

log = logging.getLogger(__name__)
_MAX_CACHED = 10_000


class Webinars:
    """`allow_anonymous_questions`, cached briefly; a registry that does not answer in
    time means "not allowed" (and is asked again next time)."""

    def __init__(self, nc: NATS, ttl: float, timeout: float) -> None:
        self.nc = nc
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, bool]] = {}

    async def allows_anonymous_questions(self, webinar_id: str) -> bool:
        now = time.monotonic()
        cached = self._cache.get(webinar_id)
        if cached and cached[0] > now:
            return cached[1]
        request = json.dumps({"webinar_id": webinar_id}).encode()
        try:
            reply = await self.nc.request(REGISTRY_WEBINAR_GET, request, timeout=self.timeout)
            body = json.loads(reply.data)
        except Exception as exc:  # noqa: BLE001 - timeout, no responders, bad reply: not allowed
            log.warning("registry did not answer for webinar %s: %r", webinar_id, exc)
            return False
        webinar = body.get("webinar") if isinstance(body, dict) else None
        allowed = bool(isinstance(webinar, dict) and webinar.get("allow_anonymous_questions"))
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[webinar_id] = (now + self.ttl, allowed)
        return allowed
