"""One client WebSocket: its identity, its outgoing queue and how it ends."""

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from services.common.audience import STAGE_ROLES, visible_to
from services.common.tokens import JoinClaims
from services.signaling.protocol import TOO_SLOW, Close, TokenBucket, error_frame
from services.signaling.rooms import Person

log = logging.getLogger(__name__)
PRESENCE_EVENTS = frozenset({"participant.joined", "participant.left"})


@dataclass
class _Closing:
    frames: list[dict[str, Any]]
    close: Close


@dataclass
class Connection:
    ws: WebSocket
    claims: JoinClaims
    session: str
    bucket: TokenBucket
    queue_limit: int
    mode: str = "webinar"
    on_stage: bool = False
    # Set once the connection ends for good (removed, ended, replaced): no grace period.
    final: bool = False
    closed: bool = False
    publish_node: str | None = None
    subscribe_node: str | None = None
    subscribe_origin: str | None = None
    strikes: int = 0
    _queue: asyncio.Queue[dict[str, Any] | _Closing] = field(default_factory=asyncio.Queue)
    _welcomed: bool = False
    _pending: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.on_stage = self.on_stage or self.role in STAGE_ROLES

    @property
    def webinar_id(self) -> str:
        return self.claims.webinar_id

    @property
    def pid(self) -> str:
        return self.claims.participant_id

    @property
    def role(self) -> str:
        return self.claims.role.value

    @property
    def person(self) -> Person:
        return Person(self.pid, self.claims.name, self.role)

    def wants(self, event_type: str, data: dict[str, Any]) -> bool:
        """Whether this client receives an event (CONTRACTS.md "Audience of an event").

        In webinar mode the audience does not see other attendees come and go: with a
        thousand attendees those events would be most of the traffic.
        """
        if not visible_to(data, self.pid, self.role, self.on_stage):
            return False
        if event_type in PRESENCE_EVENTS and self.mode == "webinar" and not self.on_stage:
            return data.get("role") != "attendee" or data.get("participant_id") == self.pid
        return True

    def ref(self) -> dict[str, Any]:
        return self.person.ref(self.on_stage)

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; frames sent before the welcome wait for it."""
        if self.closed:
            return
        if not self._welcomed:
            self._pending.append(frame)
            return
        if self._queue.qsize() >= self.queue_limit:
            log.warning("closing slow client %s", self.pid)
            self.close(TOO_SLOW, final=False)
            return
        self._queue.put_nowait(frame)

    def welcome(self, frame: dict[str, Any]) -> None:
        self._queue.put_nowait(frame)
        self._welcomed = True
        pending, self._pending = self._pending, []
        for item in pending:
            self.send(item)

    def close(
        self,
        why: Close,
        message: str | None = None,
        final: bool = True,
        frames: list[dict[str, Any]] | None = None,
    ) -> None:
        """Send the final frames (by default an error frame) and close with `why`."""
        if self.closed:
            return
        self.closed = True
        self.final = self.final or final
        if frames is None:
            frames = [error_frame(None, why.error, message or why.reason)]
        if why is TOO_SLOW:  # what is queued would never get through anyway
            while not self._queue.empty():
                self._queue.get_nowait()
        self._welcomed = True
        self._queue.put_nowait(_Closing(frames, why))

    async def sender(self) -> None:
        """Write queued frames to the socket until closed."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _Closing):
                with contextlib.suppress(Exception):
                    for frame in item.frames:
                        await self.ws.send_text(json.dumps(frame))
                    await self.ws.close(item.close.code, item.close.reason)
                return
            try:
                await self.ws.send_text(json.dumps(item))
            except Exception:  # noqa: BLE001 - the client went away; the reader notices
                return
