"""Q&A: questions for the speakers, upvoted once per participant, answered or dismissed.

Per webinar: a hash of questions, one set of voters per question (its size is the vote
count), and the askers of anonymous questions kept apart for moderation.
"""

import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis

from services.chat.atomic import Scripts, placeholder
from services.chat.errors import conflict, forbidden, invalid, not_found
from services.chat.limits import Limits
from services.chat.messages import SOURCE, event_data
from services.chat.models import (
    Participant,
    QaAnswerArgs,
    QaAskArgs,
    Question,
    QuestionDismissed,
    QuestionVotes,
)
from services.chat.webinars import Webinars
from services.common.events import make_event
from services.common.outbox import Outbox


def _key(webinar_id: str, kind: str) -> str:
    return f"qa:{{{webinar_id}}}:{kind}"


def _voters(webinar_id: str, question_id: str) -> str:
    return _key(webinar_id, f"voters:{question_id}")


class Questions:
    def __init__(
        self,
        redis: aioredis.Redis,
        outbox: Outbox,
        scripts: Scripts,
        limits: Limits,
        webinars: Webinars,
    ) -> None:
        self.redis = redis
        self.outbox = outbox
        self.scripts = scripts
        self.limits = limits
        self.webinars = webinars

    async def ask(self, webinar_id: str, who: Participant, args: QaAskArgs) -> Question:
        if args.anonymous and not await self.webinars.allows_anonymous_questions(webinar_id):
            raise forbidden("this webinar does not allow anonymous questions")
        await self.limits.hit(webinar_id, who.id)
        question = Question(
            id=uuid.uuid4().hex,
            text=args.text,
            participant_id=None if args.anonymous else who.id,
            name=None if args.anonymous else who.name,
            anonymous=args.anonymous,
            asked_at=datetime.now(UTC),
        )
        event = make_event("qa.asked", webinar_id, event_data(question), SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(webinar_id, "questions"), question.id, question.model_dump_json())
            if args.anonymous:
                pipe.hset(_key(webinar_id, "askers"), question.id, who.id)
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()
        return question

    async def _get(self, webinar_id: str, question_id: str) -> Question:
        raw = await self.redis.hget(_key(webinar_id, "questions"), question_id)
        if raw is None:
            raise not_found(f"question {question_id} not found")
        question = Question.model_validate_json(raw)
        question.votes = int(await self.redis.scard(_voters(webinar_id, question_id)))
        return question

    async def upvote(self, webinar_id: str, who: Participant, question_id: str) -> QuestionVotes:
        question = await self._get(webinar_id, question_id)
        if question.status == "dismissed":
            raise conflict("this question was dismissed")
        ph = placeholder("votes")
        data = event_data(QuestionVotes(question_id=question_id, votes=0)) | {"votes": ph}
        event = make_event("qa.upvoted", webinar_id, data, SOURCE)
        votes = await self.scripts.upvote(_voters(webinar_id, question_id), who.id, event, ph)
        if votes < 0:
            raise conflict("you already upvoted this question")
        return QuestionVotes(question_id=question_id, votes=votes)

    async def answer(self, webinar_id: str, who: Participant, args: QaAnswerArgs) -> Question:
        if not who.is_speaker:
            raise forbidden("only hosts, cohosts and panelists may answer questions")
        if args.text is None and not args.live:
            raise invalid("args: give an answer text or live: true")
        question = await self._get(webinar_id, args.question_id)
        if question.status == "dismissed":
            raise conflict("this question was dismissed")
        question.status, question.answered_by = "answered", who.id
        question.answer, question.answered_live = args.text, args.live
        await self._save(webinar_id, question, "qa.answered", event_data(question))
        return question

    async def dismiss(
        self, webinar_id: str, who: Participant, question_id: str
    ) -> QuestionDismissed:
        if not who.is_speaker:
            raise forbidden("only hosts, cohosts and panelists may dismiss questions")
        question = await self._get(webinar_id, question_id)
        if question.status == "dismissed":
            raise conflict("this question was already dismissed")
        question.status = "dismissed"
        dismissed = QuestionDismissed(question_id=question_id, dismissed_by=who.id)
        await self._save(webinar_id, question, "qa.dismissed", event_data(dismissed))
        return dismissed

    async def _save(
        self, webinar_id: str, question: Question, event_type: str, data: dict[str, object]
    ) -> None:
        event = make_event(event_type, webinar_id, data, SOURCE)
        stored = question.model_copy(update={"votes": 0})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(webinar_id, "questions"), question.id, stored.model_dump_json())
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()

    async def list(self, webinar_id: str, who: Participant) -> list[Question]:
        """Most votes first (then oldest first); dismissed ones only for the speakers."""
        raw = await self.redis.hvals(_key(webinar_id, "questions"))
        questions = [Question.model_validate_json(r) for r in raw]
        if not who.is_speaker:
            questions = [q for q in questions if q.status != "dismissed"]
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in questions:
                pipe.scard(_voters(webinar_id, q.id))
                pipe.sismember(_voters(webinar_id, q.id), who.id)
            results = await pipe.execute()
        for i, q in enumerate(questions):
            q.votes, q.voted = int(results[2 * i]), bool(results[2 * i + 1])
        return sorted(questions, key=lambda q: (-q.votes, q.asked_at))
