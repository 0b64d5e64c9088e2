"""Client requests: one small method per request type, each returning the `ok` fields
or raising RequestError. Permissions are checked here, on the server."""

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
from opentelemetry import propagate

from services.common.audience import HOST_ROLES, STAGE_ROLES
from services.common.subjects import chat_command
from services.signaling.connection import Connection
from services.signaling.protocol import (
    REMOVED,
    RequestError,
    check_sdp,
    media_kind,
    participant_id,
)

if TYPE_CHECKING:
    from services.signaling.service import Signaling

log = logging.getLogger(__name__)
Handler = Callable[[Connection, dict[str, Any]], Awaitable[dict[str, Any]]]

# Forwarded to the chat service as `svc.chat.<type>` (CONTRACTS.md, "Chat service").
CHAT_TYPES = frozenset({
    "chat.send", "chat.history", "chat.delete", "chat.mute", "chat.disable", "chat.slowmode",
    "qa.ask", "qa.upvote", "qa.answer", "qa.dismiss", "qa.list",
    "poll.create", "poll.vote", "poll.close", "poll.list",
})  # fmt: skip
# Forwarded to the restream service as `svc.restream.<type>`, hosts only.
RESTREAM_TYPES = frozenset({"restream.start", "restream.stop", "recording.start",
                            "recording.stop"})  # fmt: skip


def restream_command(op: str) -> str:
    return f"svc.restream.{op}"


class Handlers:
    def __init__(self, svc: "Signaling") -> None:
        self.svc = svc
        self.table: dict[str, Handler] = {
            "ping": self.ping,
            "publish": self.publish,
            "subscribe": self.subscribe,
            "hand.raise": self.hand_raise,
            "hand.lower": self.hand_lower,
            "participant.promote": self.promote,
            "participant.demote": self.demote,
            "participant.mute": self.mute,
            "participant.remove": self.remove,
            "webinar.start": self.webinar_start,
            "webinar.end": self.webinar_end,
            "room.lock": self.room_lock,
            "room.unlock": self.room_unlock,
            "participant.list": self.participant_list,
        }

    def find(self, request_type: str) -> Handler | None:
        if request_type in self.table:
            return self.table[request_type]
        if request_type in CHAT_TYPES:
            return self.forward_chat
        if request_type in RESTREAM_TYPES:
            return self.forward_restream
        return None

    # helpers ------------------------------------------------------------------
    @staticmethod
    def _require_host(conn: Connection, what: str, roles: frozenset[str] = HOST_ROLES) -> None:
        if conn.role not in roles:
            who = "the host" if roles == {"host"} else "hosts and cohosts"
            raise RequestError("forbidden", f"only {who} may {what}")

    async def _on_stage(self, conn: Connection) -> bool:
        if conn.role in STAGE_ROLES:
            return True
        conn.on_stage = await self.svc.store.is_promoted(conn.webinar_id, conn.pid)
        return conn.on_stage

    async def _not_in_lobby(self, conn: Connection, what: str) -> None:
        if conn.role == "attendee" and not await self.svc.started(conn.webinar_id):
            raise RequestError(
                "forbidden", f"cannot {what} in the lobby; wait until the host starts the webinar"
            )

    async def _target(self, conn: Connection, frame: dict[str, Any]) -> str:
        pid = participant_id(frame)
        if await self.svc.store.person(conn.webinar_id, pid) is None:
            raise RequestError("not_found", f"participant {pid} is not in this webinar")
        return pid

    async def _forward(self, subject: str, conn: Connection, frame: dict[str, Any], what: str
                       ) -> dict[str, Any]:  # fmt: skip
        args = {k: v for k, v in frame.items() if k not in ("id", "type")}
        ref = conn.person.ref(await self._on_stage(conn))
        body = {"webinar_id": conn.webinar_id, "participant": ref, "args": args}
        headers: dict[str, str] = {}
        propagate.inject(headers)
        try:
            msg = await self.svc.nc.request(
                subject, json.dumps(body).encode(), timeout=self.svc.request_timeout,
                headers=headers,
            )  # fmt: skip
            reply = json.loads(msg.data)
        except (nats.errors.Error, TimeoutError, ValueError) as exc:
            raise RequestError("unavailable", f"the {what} service is not available") from exc
        if not isinstance(reply, dict):
            raise RequestError("unavailable", f"the {what} service answered garbage")
        if reply.get("ok") is True:
            return {k: v for k, v in reply.items() if k != "ok"}
        raise RequestError(str(reply.get("code", "invalid")), str(reply.get("message", "")))

    # requests -----------------------------------------------------------------
    async def ping(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def participant_list(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        """Hosts and cohosts: who is in the room now (attendees see only the stage)."""
        self._require_host(conn, "list participants")
        people = await self.svc.store.people(conn.webinar_id)
        return {"participants": people, "hands": await self.svc.store.hands(conn.webinar_id)}

    async def publish(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        sdp = check_sdp(frame, self.svc.settings.signaling_max_sdp_bytes)
        await self._not_in_lobby(conn, "publish")
        webinar = await self.svc.webinar(conn.webinar_id)
        if webinar.get("mode") != "meeting" and not await self._on_stage(conn):
            raise RequestError(
                "forbidden", "only participants on stage may publish; raise your hand to ask"
            )
        node = await self.svc.origin(conn.webinar_id)
        body = {"webinar_id": conn.webinar_id, "participant_id": conn.pid, "sdp": sdp}
        reply = await self.svc.media.request(node, "publish", body)
        answer = reply.get("sdp")
        if not isinstance(answer, str):
            raise RequestError("unavailable", f"media node {node} sent no answer")
        conn.publish_node = node
        await self.svc.store.set_media(conn.webinar_id, conn.pid, "publish", node)
        return {"sdp": answer, "node_id": node}

    async def subscribe(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        sdp = check_sdp(frame, self.svc.settings.signaling_max_sdp_bytes)
        await self._not_in_lobby(conn, "subscribe")
        origin = await self.svc.origin(conn.webinar_id)
        node = self.svc.media.least_loaded()
        body = {"webinar_id": conn.webinar_id, "participant_id": conn.pid, "sdp": sdp,
                "origin_node": origin}  # fmt: skip
        reply = await self.svc.media.request(node, "subscribe", body)
        answer = reply.get("sdp")
        if not isinstance(answer, str):
            raise RequestError("unavailable", f"media node {node} sent no answer")
        conn.subscribe_node, conn.subscribe_origin = node, origin
        await self.svc.store.set_media(conn.webinar_id, conn.pid, "subscribe", node)
        # The current slot map, so a late joiner labels its slots before the next change.
        slots = await self.svc.media.request(node, "slots", {"webinar_id": conn.webinar_id})
        return {"sdp": answer, "node_id": node, "origin_node": origin,
                "slots": slots.get("slots", {})}  # fmt: skip

    async def hand_raise(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        if conn.role != "attendee":
            raise RequestError("forbidden", "only attendees raise their hand")
        await self._not_in_lobby(conn, "raise your hand")
        if await self._on_stage(conn):
            raise RequestError("conflict", "you are already on stage")
        position = await self.svc.store.raise_hand(conn.webinar_id, conn.person)
        return {"position": position}

    async def hand_lower(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        pid = conn.pid if frame.get("participant_id") in (None, conn.pid) else participant_id(frame)
        if pid != conn.pid:
            self._require_host(conn, "lower someone else's hand")
        lowered = await self.svc.store.lower_hand(conn.webinar_id, pid, by=conn.pid)
        if lowered and pid != conn.pid:
            await self.svc.hub.control(conn.webinar_id, "notify", participant_id=pid,
                                       notice="hand.lowered", data={"by": conn.pid})  # fmt: skip
        return {"participant_id": pid, "lowered": lowered}

    async def promote(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        self._require_host(conn, "promote participants")
        pid = participant_id(frame)
        person = await self.svc.store.set_promoted(conn.webinar_id, pid, True, by=conn.pid)
        await self.svc.hub.control(conn.webinar_id, "notify", participant_id=pid, on_stage=True,
                                   notice="promoted", data={"by": conn.pid})  # fmt: skip
        return {"participant_id": pid, "name": person.name, "on_stage": True}

    async def demote(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        self._require_host(conn, "demote participants")
        pid = participant_id(frame)
        person = await self.svc.store.set_promoted(conn.webinar_id, pid, False, by=conn.pid)
        await self.svc.hub.control(conn.webinar_id, "notify", participant_id=pid, on_stage=False,
                                   notice="demoted", data={"by": conn.pid})  # fmt: skip
        node = (await self.svc.store.media(conn.webinar_id, pid)).get("publish")
        unpublished = False
        if node:
            body = {"webinar_id": conn.webinar_id, "participant_id": pid}
            try:
                await self.svc.media.request(node, "unpublish", body)
                unpublished = True
            except RequestError as exc:
                log.warning("unpublish of %s on %s failed: %s", pid, node, exc.message)
            await self.svc.store.set_media(conn.webinar_id, pid, "publish", None)
        return {"participant_id": pid, "name": person.name, "on_stage": False,
                "unpublished": unpublished}  # fmt: skip

    async def mute(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        pid, kind = participant_id(frame), media_kind(frame)
        muted = frame.get("muted", True)
        if not isinstance(muted, bool):
            raise RequestError("invalid", "muted must be true or false")
        if pid != conn.pid:
            self._require_host(conn, "mute other participants")
            if not muted:
                raise RequestError("forbidden", "only the participant may unmute themselves")
        await self._target(conn, frame)
        node = (await self.svc.store.media(conn.webinar_id, pid)).get("publish")
        if node:
            body = {"webinar_id": conn.webinar_id, "participant_id": pid, "kind": kind,
                    "muted": muted}  # fmt: skip
            await self.svc.media.request(node, "mute", body)
        await self.svc.store.muted(conn.webinar_id, pid, kind, muted, by=conn.pid)
        if pid != conn.pid:
            await self.svc.hub.control(conn.webinar_id, "notify", participant_id=pid,
                                       notice="muted", data={"kind": kind, "muted": muted,
                                                             "by": conn.pid})  # fmt: skip
        return {"participant_id": pid, "kind": kind, "muted": muted, "enforced": bool(node)}

    async def remove(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        self._require_host(conn, "remove participants")
        pid = participant_id(frame)
        if pid == conn.pid:
            raise RequestError("invalid", "you cannot remove yourself; leave instead")
        target = await self.svc.store.person(conn.webinar_id, pid)
        if target is None:
            raise RequestError("not_found", f"participant {pid} is not in this webinar")
        if target.role == "host" or (target.role == "cohost" and conn.role != "host"):
            raise RequestError("forbidden", f"a {conn.role} cannot remove a {target.role}")
        dropped = await self.svc.store.remove(conn.webinar_id, pid, by=conn.pid)
        await self.svc.hub.control(
            conn.webinar_id,
            "disconnect",
            participant_id=pid,
            code=REMOVED.code,
            reason=REMOVED.reason,
            error=REMOVED.error,
            message="you were removed by a host",
        )
        await self.svc.leave_media(dropped)
        return {"participant_id": pid, "name": target.name}

    async def webinar_start(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        self._require_host(conn, "start the webinar", frozenset({"host"}))
        await self.svc.store.start(conn.webinar_id, by=conn.pid)
        return {"started": True}

    async def webinar_end(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        self._require_host(conn, "end the webinar", frozenset({"host"}))
        dropped = await self.svc.store.end(conn.webinar_id, by=conn.pid)
        await self.svc.hub.control(conn.webinar_id, "end", time=datetime.now(UTC).isoformat(),
                                   data={"by": conn.pid, "reason": "ended by host"})  # fmt: skip
        for gone in dropped:
            await self.svc.leave_media(gone)
        return {"ended": True}

    async def room_lock(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        self._require_host(conn, "lock the room", frozenset({"host"}))
        changed = await self.svc.store.set_locked(conn.webinar_id, True, by=conn.pid)
        return {"locked": True, "changed": changed}

    async def room_unlock(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        self._require_host(conn, "unlock the room", frozenset({"host"}))
        changed = await self.svc.store.set_locked(conn.webinar_id, False, by=conn.pid)
        return {"locked": False, "changed": changed}

    async def forward_chat(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        return await self._forward(chat_command(str(frame["type"])), conn, frame, "chat")

    async def forward_restream(self, conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
        self._require_host(conn, "control restreams and recordings")
        subject = restream_command(str(frame["type"]))
        return await self._forward(subject, conn, frame, "restream")
