"""Webinar data from the registry (`svc.registry.webinar.get`), cached briefly."""

import json
import time
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from services.common.subjects import REGISTRY_WEBINAR_GET

PUBLIC_FIELDS = ("id", "title", "description", "starts_at", "duration_minutes", "mode",
                 "capacity", "approval", "allow_anonymous_questions", "status")  # fmt: skip


class WebinarUnavailable(Exception):
    """The registry did not answer."""


class Webinars:
    def __init__(self, nc: NATS, ttl: float, timeout: float) -> None:
        self._nc = nc
        self._ttl = ttl
        self._timeout = timeout
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def get(self, webinar_id: str) -> dict[str, Any] | None:
        """The stored webinar, or None when the registry does not know it."""
        hit = self._cache.get(webinar_id)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        try:
            msg = await self._nc.request(
                REGISTRY_WEBINAR_GET,
                json.dumps({"webinar_id": webinar_id}).encode(),
                timeout=self._timeout,
            )
            body = json.loads(msg.data)
        except (nats.errors.Error, TimeoutError, ValueError) as exc:
            raise WebinarUnavailable(str(exc) or type(exc).__name__) from exc
        webinar = body.get("webinar") if isinstance(body, dict) else None
        if webinar is None and body.get("error") != "not_found":
            raise WebinarUnavailable(str(body.get("message") or body.get("error")))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[webinar_id] = (time.monotonic(), webinar)
        return webinar if isinstance(webinar, dict) else None


def public_view(webinar: dict[str, Any]) -> dict[str, Any]:
    return {k: webinar[k] for k in PUBLIC_FIELDS if k in webinar}
