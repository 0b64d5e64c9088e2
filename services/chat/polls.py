"""Polls: opened by hosts, one vote per participant, counts in Redis.

Per poll: the poll (in the webinar's hash), an "open" flag whose removal closes it, a
hash of voters and their choices, and a hash of counts by option index. Votes and the
close run as scripts so a vote is counted once and never after the close.
"""

import json
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis

from services.chat.atomic import Scripts, placeholder
from services.chat.errors import conflict, forbidden, invalid, not_found
from services.chat.messages import SOURCE, event_data
from services.chat.models import Participant, Poll, PollCreateArgs, PollView, PollVotes
from services.common.events import make_event
from services.common.outbox import Outbox


def _polls(webinar_id: str) -> str:
    return f"poll:{{{webinar_id}}}:polls"


def _poll_keys(webinar_id: str, poll_id: str) -> tuple[str, str, str]:
    """(open flag, voters, counts)."""
    base = f"poll:{{{webinar_id}}}:{poll_id}"
    return f"{base}:open", f"{base}:voters", f"{base}:counts"


class Polls:
    def __init__(self, redis: aioredis.Redis, outbox: Outbox, scripts: Scripts) -> None:
        self.redis = redis
        self.outbox = outbox
        self.scripts = scripts

    async def create(self, webinar_id: str, who: Participant, args: PollCreateArgs) -> PollView:
        if not who.is_host:
            raise forbidden("only hosts and cohosts may create polls")
        if len(set(args.options)) != len(args.options):
            raise invalid("args.options: options must differ")
        poll = Poll(
            id=uuid.uuid4().hex,
            question=args.question,
            options=args.options,
            multiple=args.multiple,
            results=args.results,
            created_by=who.id,
            created_at=datetime.now(UTC),
        )
        view = PollView(**poll.model_dump(), counts=[0] * len(poll.options))
        public = view if poll.results == "everyone" else view.model_copy(update={"counts": None})
        event = make_event("poll.opened", webinar_id, event_data(public), SOURCE)
        open_flag, _, _ = _poll_keys(webinar_id, poll.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_polls(webinar_id), poll.id, poll.model_dump_json())
            pipe.set(open_flag, "1")
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()
        return view

    async def _get(self, webinar_id: str, poll_id: str) -> Poll:
        raw = await self.redis.hget(_polls(webinar_id), poll_id)
        if raw is None:
            raise not_found(f"poll {poll_id} not found")
        return Poll.model_validate_json(raw)

    async def vote(
        self, webinar_id: str, who: Participant, poll_id: str, choices: list[int]
    ) -> PollVotes:
        poll = await self._get(webinar_id, poll_id)
        if len(set(choices)) != len(choices) or any(
            not 0 <= c < len(poll.options) for c in choices
        ):
            raise invalid(
                f"args.choices: distinct option indexes from 0 to {len(poll.options) - 1}"
            )
        if not poll.multiple and len(choices) != 1:
            raise invalid("args.choices: this poll takes exactly one choice")
        if poll.status != "open":
            raise conflict("this poll is closed")
        audience = "everyone" if poll.results == "everyone" else "hosts"
        phs = placeholder("counts"), placeholder("voters")
        data = event_data(PollVotes(poll_id=poll_id, voters=0, counts=[], audience=audience))
        data |= {"counts": phs[0], "voters": phs[1]}
        event = make_event("poll.voted", webinar_id, data, SOURCE)
        result = await self.scripts.poll_vote(
            _poll_keys(webinar_id, poll_id), who.id, sorted(choices), len(poll.options), event, phs
        )
        if result == -1:
            raise conflict("you already voted in this poll")
        if result == -2:
            raise conflict("this poll is closed")
        return PollVotes(
            poll_id=poll_id, voters=int(result[0]), counts=json.loads(result[1]), audience=audience
        )

    async def close(self, webinar_id: str, who: Participant, poll_id: str) -> PollView:
        if not who.is_host:
            raise forbidden("only hosts and cohosts may close polls")
        poll = await self._get(webinar_id, poll_id)
        if poll.status != "open":
            raise conflict("this poll is already closed")
        poll.status, poll.closed_at = "closed", datetime.now(UTC)
        phs = placeholder("counts"), placeholder("voters")
        data = event_data(PollView(**poll.model_dump())) | {"voters": phs[1]}
        if poll.results == "everyone":
            data["counts"] = phs[0]
        event = make_event("poll.closed", webinar_id, data, SOURCE)
        open_flag, voters, counts = _poll_keys(webinar_id, poll_id)
        keys = (open_flag, _polls(webinar_id), counts, voters)
        result = await self.scripts.poll_close(
            keys, poll_id, poll.model_dump_json(), len(poll.options), event, phs
        )
        if result == -1:
            raise conflict("this poll is already closed")
        return PollView(**poll.model_dump(), voters=int(result[0]), counts=json.loads(result[1]))

    async def list(self, webinar_id: str, who: Participant) -> list[PollView]:
        """Every poll, oldest first; counts where `who` may see them, and their own vote."""
        polls = sorted(
            (Poll.model_validate_json(r) for r in await self.redis.hvals(_polls(webinar_id))),
            key=lambda p: p.created_at,
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for poll in polls:
                _, voters, counts = _poll_keys(webinar_id, poll.id)
                pipe.hlen(voters)
                pipe.hgetall(counts)
                pipe.hget(voters, who.id)
            results = await pipe.execute()
        views = []
        for i, poll in enumerate(polls):
            total, counts, mine = results[3 * i : 3 * i + 3]
            view = PollView(**poll.model_dump(), voters=int(total))
            if poll.results == "everyone" or who.is_host:
                view.counts = [int(counts.get(str(n), 0)) for n in range(len(poll.options))]
            view.my_choices = json.loads(mine) if mine else None
            views.append(view)
        return views
