"""Request-reply handlers, one per `svc.chat.<request type>` subject.

Each validates its command (a bad one is an `invalid` reply, see `errors_middleware`),
lets the domain object check roles and change state with its event, and returns the
reply whose fields signaling copies into the client's `ok` frame.
"""

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import redis.asyncio as aioredis
from fast_depends.exceptions import ValidationError as DependsValidationError
from faststream import AckPolicy, Context, ExceptionMiddleware
from faststream.nats import JStream, NatsRoute, NatsRouter, PullSub
from prometheus_client import Counter
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.chat.errors import ChatError
from services.chat.messages import Messages
from services.chat.models import (
    ChatDelete,
    ChatDisable,
    ChatHistory,
    ChatMute,
    ChatSend,
    ChatSlowmode,
    PollClose,
    PollCreate,
    PollList,
    PollVote,
    QaAnswer,
    QaAsk,
    QaDismiss,
    QaList,
    QaUpvote,
)
from services.chat.polls import Polls
from services.chat.questions import Questions
from services.common.events import CloudEvent
from services.common.subjects import EVENTS_STREAM, chat_command, webinar_event

log = logging.getLogger(__name__)
Reply = dict[str, Any]
DELETED_SUBJECT = webinar_event("*", "webinar.deleted")
WEBINAR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

REJECTED = Counter(
    "webinar_chat_rejected_commands_total", "Chat commands answered with an error", ["code"]
)


class Chat:
    """What the handlers work with, built once per running service (see main.py)."""

    def __init__(
        self, redis: aioredis.Redis, messages: Messages, questions: Questions, polls: Polls
    ) -> None:
        self.redis = redis
        self.messages = messages
        self.questions = questions
        self.polls = polls

    async def forget(self, webinar_id: str) -> int:
        """Delete everything kept for a webinar; returns how many keys went."""
        if not WEBINAR_ID.fullmatch(webinar_id):  # never a glob pattern in SCAN MATCH
            log.warning("not forgetting webinar %r: not a webinar id", webinar_id)
            return 0
        deleted = 0
        for prefix in ("chat", "qa", "poll"):
            keys = [k async for k in self.redis.scan_iter(f"{prefix}:{{{webinar_id}}}:*", 500)]
            for start in range(0, len(keys), 500):
                deleted += int(await self.redis.unlink(*keys[start : start + 500]))
        return deleted


ChatDep = Annotated[Chat, Context("chat")]


def ok(**result: Any) -> Reply:
    def plain(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", exclude_none=True)
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {"ok": True, **{k: plain(v) for k, v in result.items()}}


def error(code: str, message: str) -> Reply:
    REJECTED.labels(code).inc()
    return {"ok": False, "code": code, "message": message}


# chat ------------------------------------------------------------------------------
async def chat_send(cmd: ChatSend, chat: ChatDep) -> Reply:
    """Send a message to everyone, to the panelists, or privately to one participant."""
    message = await chat.messages.send(cmd.webinar_id, cmd.participant, cmd.args)
    return ok(message=message)


async def chat_history(cmd: ChatHistory, chat: ChatDep) -> Reply:
    """The messages this participant may see, oldest first; `before` pages back. Also
    the chat's state (disabled, slow mode, muted) for a client that (re)joins."""
    messages, before = await chat.messages.history(
        cmd.webinar_id, cmd.participant, cmd.args.before, cmd.args.limit
    )
    state = await chat.messages.state(cmd.webinar_id, cmd.participant)
    return ok(messages=messages, before=before, chat=state)


async def chat_delete(cmd: ChatDelete, chat: ChatDep) -> Reply:
    """Hosts: remove a message from the history and from every client."""
    deleted = await chat.messages.delete(cmd.webinar_id, cmd.participant, cmd.args.message_id)
    return ok(message_id=deleted.message_id)


async def chat_mute(cmd: ChatMute, chat: ChatDep) -> Reply:
    """Hosts: stop (or let again) one participant writing in the chat."""
    await chat.messages.mute(
        cmd.webinar_id, cmd.participant, cmd.args.participant_id, cmd.args.muted
    )
    return ok(participant_id=cmd.args.participant_id, muted=cmd.args.muted)


async def chat_disable(cmd: ChatDisable, chat: ChatDep) -> Reply:
    """Hosts: disable (or enable) the chat for attendees."""
    await chat.messages.disable(cmd.webinar_id, cmd.participant, cmd.args.disabled)
    return ok(disabled=cmd.args.disabled)


async def chat_slowmode(cmd: ChatSlowmode, chat: ChatDep) -> Reply:
    """Hosts: attendees may send one message per `seconds` (0 turns it off)."""
    await chat.messages.slow_mode(cmd.webinar_id, cmd.participant, cmd.args.seconds)
    return ok(seconds=cmd.args.seconds)


# Q&A -------------------------------------------------------------------------------
async def qa_ask(cmd: QaAsk, chat: ChatDep) -> Reply:
    """Ask the speakers a question, anonymously if the webinar allows it."""
    question = await chat.questions.ask(cmd.webinar_id, cmd.participant, cmd.args)
    return ok(question=question)


async def qa_upvote(cmd: QaUpvote, chat: ChatDep) -> Reply:
    """Upvote a question, once per participant."""
    votes = await chat.questions.upvote(cmd.webinar_id, cmd.participant, cmd.args.question_id)
    return ok(question_id=votes.question_id, votes=votes.votes)


async def qa_answer(cmd: QaAnswer, chat: ChatDep) -> Reply:
    """Speakers: answer in text, or mark a question answered live."""
    question = await chat.questions.answer(cmd.webinar_id, cmd.participant, cmd.args)
    return ok(question=question)


async def qa_dismiss(cmd: QaDismiss, chat: ChatDep) -> Reply:
    """Speakers: dismiss a question."""
    await chat.questions.dismiss(cmd.webinar_id, cmd.participant, cmd.args.question_id)
    return ok(question_id=cmd.args.question_id)


async def qa_list(cmd: QaList, chat: ChatDep) -> Reply:
    """The questions, most votes first."""
    return ok(questions=await chat.questions.list(cmd.webinar_id, cmd.participant))


# polls -----------------------------------------------------------------------------
async def poll_create(cmd: PollCreate, chat: ChatDep) -> Reply:
    """Hosts: open a single or multiple choice poll."""
    return ok(poll=await chat.polls.create(cmd.webinar_id, cmd.participant, cmd.args))


async def poll_vote(cmd: PollVote, chat: ChatDep) -> Reply:
    """Vote once in an open poll; choices are option indexes."""
    votes = await chat.polls.vote(
        cmd.webinar_id, cmd.participant, cmd.args.poll_id, cmd.args.choices
    )
    result: Reply = {"poll_id": votes.poll_id, "choices": sorted(cmd.args.choices)}
    if votes.audience == "everyone" or cmd.participant.is_host:
        result |= {"voters": votes.voters, "counts": votes.counts}
    return ok(**result)


async def poll_close(cmd: PollClose, chat: ChatDep) -> Reply:
    """Hosts: close a poll; its final counts come back."""
    return ok(poll=await chat.polls.close(cmd.webinar_id, cmd.participant, cmd.args.poll_id))


async def poll_list(cmd: PollList, chat: ChatDep) -> Reply:
    """Every poll, with counts where this participant may see them."""
    return ok(polls=await chat.polls.list(cmd.webinar_id, cmd.participant))


# events ----------------------------------------------------------------------------
async def webinar_deleted(event: CloudEvent, chat: ChatDep) -> None:
    """A deleted webinar's chat, questions and polls are deleted too."""
    deleted = await chat.forget(event.subject)
    log.info("webinar %s deleted: removed %d chat keys", event.subject, deleted)


HANDLERS: dict[str, Callable[..., Awaitable[Reply]]] = {
    "chat.send": chat_send,
    "chat.history": chat_history,
    "chat.delete": chat_delete,
    "chat.mute": chat_mute,
    "chat.disable": chat_disable,
    "chat.slowmode": chat_slowmode,
    "qa.ask": qa_ask,
    "qa.upvote": qa_upvote,
    "qa.answer": qa_answer,
    "qa.dismiss": qa_dismiss,
    "qa.list": qa_list,
    "poll.create": poll_create,
    "poll.vote": poll_vote,
    "poll.close": poll_close,
    "poll.list": poll_list,
}


def create_router(queue: str, max_workers: int) -> NatsRouter:
    """A fresh router (one per broker): the commands, every replica in the same queue
    group, each subject handling up to `max_workers` at once; and the clean-up after a
    webinar is deleted, from a durable JetStream consumer that the replicas share (a
    failure there is retried, not answered)."""
    routes = [
        NatsRoute(handler, chat_command(op), queue=queue, max_workers=max_workers)
        for op, handler in HANDLERS.items()
    ]
    cleanup = NatsRoute(
        webinar_deleted,
        DELETED_SUBJECT,
        stream=JStream(EVENTS_STREAM, declare=False),
        durable="chat-webinar-deleted",
        pull_sub=PullSub(batch_size=10, timeout=1.0),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    router = NatsRouter(handlers=[cleanup])
    router.include_router(NatsRouter(handlers=routes, middlewares=[errors_middleware()]))
    return router


# errors ----------------------------------------------------------------------------
def _describe(exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"][1:]) or "payload"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid " + "; ".join(parts)


def errors_middleware() -> ExceptionMiddleware:
    """Turn every failure into a `{"ok": false, ...}` reply; the caller never hangs."""
    middleware = ExceptionMiddleware()

    @middleware.add_handler(ChatError, publish=True)
    async def chat_error(exc: ChatError) -> Reply:
        return error(exc.code, exc.message)

    @middleware.add_handler(PydanticValidationError, publish=True)
    @middleware.add_handler(DependsValidationError, publish=True)
    async def validation_error(exc: Exception) -> Reply:
        original = getattr(exc, "original_error", exc)
        if isinstance(original, PydanticValidationError):
            return error("invalid", _describe(original))
        return error("invalid", "invalid command")

    @middleware.add_handler(RedisConnectionError, publish=True)
    @middleware.add_handler(RedisTimeoutError, publish=True)
    async def redis_down(exc: Exception) -> Reply:
        log.warning("Redis unavailable: %s", exc)
        return error("unavailable", "storage unavailable, retry shortly")

    @middleware.add_handler(Exception, publish=True)
    async def unexpected(exc: Exception) -> Reply:
        log.exception("chat command failed", exc_info=exc)
        return error("unavailable", "internal error, retry shortly")

    return middleware
