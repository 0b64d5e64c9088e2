"""Chat messages, their history and chat moderation.

History is one Redis Stream per webinar, trimmed to about `history_max` entries; each
message is written with its `chat.message` event in one MULTI, so a message that was
acknowledged is in the history and its event reaches JetStream even if this replica
dies right after. Deleting removes the entry, so history never returns it again.
"""

import uuid
from datetime import UTC, datetime
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from services.chat.errors import forbidden, invalid, not_found
from services.chat.limits import Limits
from services.chat.models import (
    ChatDeleted,
    ChatMessage,
    ChatSendArgs,
    ChatState,
    ChatToggled,
    Participant,
    Sender,
)
from services.common.events import make_event
from services.common.outbox import Outbox

SOURCE = "/services/chat"
_SCAN_BATCH = 500


def _key(webinar_id: str, kind: str) -> str:
    return f"chat:{{{webinar_id}}}:{kind}"


def event_data(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return data


class Messages:
    def __init__(
        self, redis: aioredis.Redis, outbox: Outbox, limits: Limits, history_max: int
    ) -> None:
        self.redis = redis
        self.outbox = outbox
        self.limits = limits
        self.history_max = history_max

    async def send(self, webinar_id: str, who: Participant, args: ChatSendArgs) -> ChatMessage:
        recipients: list[str] | None = None
        audience: Literal["everyone", "panelists", "private"]
        if args.to == "everyone":
            audience = "everyone"
        elif args.to == "panelists":
            audience = "panelists"
        elif args.to == who.id:
            raise invalid("to: cannot send a private message to yourself")
        else:
            audience, recipients = "private", [who.id, args.to]
        await self._check_may_write(webinar_id, who)
        message = ChatMessage(
            id=uuid.uuid4().hex,
            sender=Sender(id=who.id, name=who.name, role=who.role),
            to=args.to,
            text=args.text,
            sent_at=datetime.now(UTC),
            audience=audience,
            recipients=recipients,
        )
        event = make_event("chat.message", webinar_id, event_data(message), SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                _key(webinar_id, "history"),
                {"id": message.id, "m": message.model_dump_json(exclude_none=True)},
                maxlen=self.history_max,
                approximate=True,
            )
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()
        return message

    async def _check_may_write(self, webinar_id: str, who: Participant) -> None:
        state = await self.state(webinar_id, who)
        if state.muted and not who.is_host:
            raise forbidden("a host muted you in the chat")
        if state.disabled and not who.on_stage_now:
            raise forbidden("the host disabled the chat for attendees")
        await self.limits.hit(webinar_id, who.id)
        if state.slow_mode_seconds > 0 and not who.on_stage_now:
            await self.limits.slow_mode(webinar_id, who.id, state.slow_mode_seconds)

    async def state(self, webinar_id: str, who: Participant) -> ChatState:
        """The moderation state a client needs when it (re)joins."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(_key(webinar_id, "settings"), ["disabled", "slowmode"])
            pipe.sismember(_key(webinar_id, "muted"), who.id)
            (disabled, slowmode), muted = await pipe.execute()
        return ChatState(
            disabled=disabled == "1", slow_mode_seconds=int(slowmode or 0), muted=bool(muted)
        )

    async def _page(self, webinar_id: str, upper: str) -> list[tuple[str, dict[str, str]]]:
        """Up to one batch of history entries from `upper` down, newest first."""
        entries = await self.redis.xrevrange(
            _key(webinar_id, "history"), max=upper, min="-", count=_SCAN_BATCH
        )
        return cast(list[tuple[str, dict[str, str]]], entries or [])

    async def history(
        self, webinar_id: str, who: Participant, before: str | None, limit: int
    ) -> tuple[list[ChatMessage], str | None]:
        """Up to `limit` messages `who` may see, older than `before`, oldest first; and
        the cursor for the page before them (None when there is nothing older)."""
        found: list[tuple[str, ChatMessage]] = []
        upper = f"({before}" if before else "+"
        exhausted = False
        while len(found) < limit:
            entries = await self._page(webinar_id, upper)
            for entry_id, fields in entries:
                message = ChatMessage.model_validate_json(fields["m"])
                if message.sender.id == who.id or who.can_see(event_data(message)):
                    found.append((entry_id, message))
                    if len(found) == limit:
                        break
            if len(entries) < _SCAN_BATCH:
                exhausted = True
                break
            upper = f"({entries[-1][0]}"
        found.reverse()
        cursor = found[0][0] if found and not (exhausted and len(found) < limit) else None
        return [message for _, message in found], cursor

    async def _find(self, webinar_id: str, message_id: str) -> tuple[str, ChatMessage] | None:
        upper = "+"
        while True:
            entries = await self._page(webinar_id, upper)
            for entry_id, fields in entries:
                if fields["id"] == message_id:
                    return entry_id, ChatMessage.model_validate_json(fields["m"])
            if len(entries) < _SCAN_BATCH:
                return None
            upper = f"({entries[-1][0]}"

    async def delete(self, webinar_id: str, who: Participant, message_id: str) -> ChatDeleted:
        if not who.is_host:
            raise forbidden("only hosts and cohosts may delete messages")
        found = await self._find(webinar_id, message_id)
        if found is None:
            raise not_found(f"message {message_id} not found")
        entry_id, message = found
        deleted = ChatDeleted(
            message_id=message_id,
            deleted_by=who.id,
            audience=message.audience,
            recipients=message.recipients,
        )
        event = make_event("chat.deleted", webinar_id, event_data(deleted), SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xdel(_key(webinar_id, "history"), entry_id)
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()
        return deleted

    async def mute(self, webinar_id: str, who: Participant, target: str, muted: bool) -> None:
        if not who.is_host:
            raise forbidden("only hosts and cohosts may mute participants in the chat")
        if target == who.id:
            raise invalid("participant_id: you cannot mute yourself")
        key = _key(webinar_id, "muted")
        await (self.redis.sadd(key, target) if muted else self.redis.srem(key, target))

    async def disable(self, webinar_id: str, who: Participant, disabled: bool) -> None:
        if not who.is_host:
            raise forbidden("only hosts and cohosts may disable the chat")
        event_type = "chat.disabled" if disabled else "chat.enabled"
        event = make_event(event_type, webinar_id, event_data(ChatToggled(by=who.id)), SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(webinar_id, "settings"), "disabled", "1" if disabled else "0")
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()

    async def slow_mode(self, webinar_id: str, who: Participant, seconds: int) -> None:
        if not who.is_host:
            raise forbidden("only hosts and cohosts may set slow mode")
        await self.redis.hset(_key(webinar_id, "settings"), "slowmode", str(seconds))
