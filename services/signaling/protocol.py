"""The client WebSocket protocol: frames, error codes, close codes, input checks.

See DESIGN.md section 3, "Client WebSocket". Requests carry an `id` that the reply
repeats; replies are `ok` or `error` frames; pushed events are `event` frames.
Besides those, signaling sends:

- `welcome` (first frame after a successful join);
- `notice` {notice, data}: a direct message to one participant (e.g. `muted`,
  `promoted`, `demoted`, `hand.lowered`), delivered even before the public event;
- `renegotiate` {node_id, publish: bool, subscribe: bool}: the media node of this
  client went away; repeat `publish` and/or `subscribe`;
- a final `error` frame without `id` before the server closes the socket, whose
  close code says why (see `Close`).
"""

import time
from dataclasses import dataclass
from typing import Any

ERROR_CODES = frozenset({"forbidden", "invalid", "not_found", "rate_limited", "conflict",
                         "unavailable"})  # fmt: skip
MEDIA_KINDS = frozenset({"audio", "video", "screen"})
MAX_ID_CHARS = 64
MAX_PARTICIPANT_ID_CHARS = 64


@dataclass(frozen=True)
class Close:
    """Why the server ends a connection: WebSocket close code, reason and error code."""

    code: int
    reason: str
    error: str = "forbidden"


BAD_TOKEN = Close(4401, "invalid or expired token")
REVOKED = Close(4403, "access revoked")
REMOVED = Close(4403, "removed by a host")
LOCKED = Close(4403, "room is locked")
NOT_FOUND = Close(4404, "webinar not found", "not_found")
FULL = Close(4409, "webinar is full", "conflict")
REPLACED = Close(4409, "connected again elsewhere", "conflict")
ENDED = Close(4410, "webinar ended")
DELETED = Close(4410, "webinar deleted", "not_found")
FLOOD = Close(4429, "too many requests", "rate_limited")
UNAVAILABLE = Close(1013, "service unavailable, reconnect shortly", "unavailable")
SHUTDOWN = Close(1012, "server restarting, reconnect", "unavailable")
TOO_SLOW = Close(1013, "client too slow, reconnect", "unavailable")


class RequestError(Exception):
    """A request failed; becomes an `error` frame with this code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code if code in ERROR_CODES else "invalid"
        self.message = message


def ok_frame(request_id: object, result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "id": request_id, "type": "ok"}


def error_frame(request_id: object, code: str, message: str) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame = {"id": request_id, **frame}
    return frame


def event_frame(event_type: str, data: dict[str, Any], event_id: str, time: str) -> dict[str, Any]:
    return {"type": "event", "event": event_type, "data": data, "event_id": event_id,
            "time": time}  # fmt: skip


def request_id(frame: dict[str, Any]) -> object:
    """The request id if it is usable (int or short string), else None."""
    rid = frame.get("id")
    if isinstance(rid, bool):
        return None
    if isinstance(rid, int) or (isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS):
        return rid
    return None


def require_str(frame: dict[str, Any], name: str, max_chars: int) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value:
        raise RequestError("invalid", f"{name} is required (a non-empty string)")
    if len(value) > max_chars:
        raise RequestError("invalid", f"{name} is longer than {max_chars} characters")
    return value


def participant_id(frame: dict[str, Any]) -> str:
    return require_str(frame, "participant_id", MAX_PARTICIPANT_ID_CHARS)


def media_kind(frame: dict[str, Any]) -> str:
    kind = frame.get("kind")
    if kind not in MEDIA_KINDS:
        raise RequestError("invalid", "kind must be one of audio, video, screen")
    return str(kind)


def check_sdp(frame: dict[str, Any], max_bytes: int) -> str:
    """An offer that at least looks like SDP: starts with v=0 and has m= lines."""
    sdp = frame.get("sdp")
    if not isinstance(sdp, str) or not sdp:
        raise RequestError("invalid", "sdp is required (the SDP offer as a string)")
    if len(sdp.encode()) > max_bytes:
        raise RequestError("invalid", f"sdp is larger than {max_bytes} bytes")
    lines = [line.strip() for line in sdp.splitlines() if line.strip()]
    if not lines or lines[0] != "v=0":
        raise RequestError("invalid", "sdp does not parse: it must start with v=0")
    if not any(line.startswith("m=") for line in lines):
        raise RequestError("invalid", "sdp does not parse: it has no m= line")
    if any(len(line) < 2 or line[1] != "=" for line in lines):
        raise RequestError("invalid", "sdp does not parse: every line must be <type>=<value>")
    return sdp


class TokenBucket:
    """Allows `rate` requests per second on average and bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
