"""Q&A: ask, upvote once, answer, dismiss, anonymous questions as the webinar allows."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common.subjects import REGISTRY_WEBINAR_GET
from tests.chat.conftest import ALICE, BOB, CAROL, HOST, PANELIST, P, Webinar


@asynccontextmanager
async def registry_answering(
    nc: NATS, webinars: dict[str, dict[str, Any]]
) -> AsyncIterator[list[str]]:
    """Stands where the registry answers svc.registry.webinar.get; yields the ids asked."""
    asked: list[str] = []

    async def respond(msg: Msg) -> None:
        webinar_id = json.loads(msg.data)["webinar_id"]
        asked.append(webinar_id)
        webinar = webinars.get(webinar_id)
        body = {"webinar": webinar} if webinar else {"error": "not_found"}
        await msg.respond(json.dumps(body).encode())

    sub = await nc.subscribe(REGISTRY_WEBINAR_GET, cb=respond)
    await nc.flush()
    try:
        yield asked
    finally:
        await sub.unsubscribe()


async def ask(w: Webinar, who: P, text: str) -> str:
    return str((await w.ok("qa.ask", who, text=text))["question"]["id"])


async def test_ask_is_an_event_for_everyone_with_the_asker(w: Webinar):
    reply = await w.ok("qa.ask", ALICE, text="When is the recording out?")
    question = reply["question"]
    assert question["participant_id"] == "alice" and question["name"] == "Alice"
    assert question["status"] == "open" and question["votes"] == 0
    event = await w.events.next("qa.asked")
    assert event.data["id"] == question["id"] and event.data["text"] == question["text"]
    assert event.data["participant_id"] == "alice"  # the attendance report counts it
    assert all(p.sees(event) for p in (BOB, HOST, PANELIST))


async def test_upvotes_count_once_per_participant(w: Webinar):
    qid = await ask(w, ALICE, "first")
    assert (await w.ok("qa.upvote", BOB, question_id=qid))["votes"] == 1
    await w.fails("qa.upvote", BOB, "conflict", question_id=qid)
    assert (await w.ok("qa.upvote", CAROL, question_id=qid))["votes"] == 2
    # Many at once, some twice: each participant still counts once.
    voters = [P(f"v{i}", "attendee") for i in range(20)]
    replies = await asyncio.gather(
        *(w.call("qa.upvote", v, question_id=qid) for v in voters + voters[:5])
    )
    assert sum(r["ok"] for r in replies) == 20
    assert {r["code"] for r in replies if not r["ok"]} == {"conflict"}
    listed = (await w.ok("qa.list", BOB))["questions"]
    assert listed[0]["votes"] == 22 and listed[0]["voted"] is True
    assert (await w.ok("qa.list", ALICE))["questions"][0]["voted"] is False
    votes = [e.data["votes"] for e in w.events.received if e.event_type == "qa.upvoted"]
    for _ in range(22 - len(votes)):
        event = await w.events.next("qa.upvoted")
        votes.append(event.data["votes"])
    assert sorted(votes) == list(range(1, 23))  # every event carries the new total
    await w.fails("qa.upvote", BOB, "not_found", question_id="nosuchquestion")


async def test_list_is_sorted_by_votes(w: Webinar):
    q1 = await ask(w, ALICE, "one vote")
    q2 = await ask(w, BOB, "two votes")
    q0 = await ask(w, CAROL, "no votes")
    await w.ok("qa.upvote", CAROL, question_id=q1)
    await w.ok("qa.upvote", ALICE, question_id=q2)
    await w.ok("qa.upvote", CAROL, question_id=q2)
    listed = (await w.ok("qa.list", ALICE))["questions"]
    assert [(q["id"], q["votes"]) for q in listed] == [(q2, 2), (q1, 1), (q0, 0)]


async def test_speakers_answer_and_dismiss(w: Webinar):
    q1 = await ask(w, ALICE, "text answer please")
    q2 = await ask(w, BOB, "live one")
    q3 = await ask(w, CAROL, "off topic")
    await w.fails("qa.answer", ALICE, "forbidden", question_id=q1, text="I know!")
    await w.fails("qa.dismiss", BOB, "forbidden", question_id=q3)
    await w.fails("qa.answer", PANELIST, "invalid", question_id=q1)
    reply = await w.ok("qa.answer", PANELIST, question_id=q1, text="Next week.")
    assert reply["question"]["status"] == "answered" and reply["question"]["answer"] == "Next week."
    event = await w.events.next("qa.answered", id=q1)
    assert event.data["answer"] == "Next week." and event.data["answered_by"] == "panel1"
    await w.ok("qa.answer", HOST, question_id=q2, live=True)
    event = await w.events.next("qa.answered", id=q2)
    assert event.data["answered_live"] is True
    await w.ok("qa.dismiss", HOST, question_id=q3)
    event = await w.events.next("qa.dismissed")
    assert event.data["question_id"] == q3 and ALICE.sees(event)
    await w.fails("qa.upvote", ALICE, "conflict", question_id=q3)
    await w.fails("qa.dismiss", HOST, "conflict", question_id=q3)
    seen_by_attendee = {q["id"]: q["status"] for q in (await w.ok("qa.list", ALICE))["questions"]}
    assert seen_by_attendee == {q1: "answered", q2: "answered"}
    seen_by_host = {q["id"]: q["status"] for q in (await w.ok("qa.list", HOST))["questions"]}
    assert seen_by_host == {q1: "answered", q2: "answered", q3: "dismissed"}


async def test_anonymous_questions_only_where_the_webinar_allows(w: Webinar, nc: NATS):
    other = "other" + w.id[5:]
    webinars = {
        w.id: {"id": w.id, "allow_anonymous_questions": True},
        other: {"id": other, "allow_anonymous_questions": False},
    }
    async with registry_answering(nc, webinars) as asked:
        reply = await w.ok("qa.ask", ALICE, text="shy question", anonymous=True)
        assert reply["question"]["anonymous"] is True
        assert reply["question"].get("participant_id") is None
        event = await w.events.next("qa.asked")
        assert "participant_id" not in event.data and "name" not in event.data
        assert "alice" not in json.dumps(event.model_dump(mode="json"))
        await w.ok("qa.ask", BOB, text="another", anonymous=True)
        assert asked == [w.id]  # cached
        body = {"webinar_id": other, "participant": ALICE.ref(),
                "args": {"text": "hidden?", "anonymous": True}}  # fmt: skip
        reply = await w.raw("qa.ask", json.dumps(body).encode())
        assert reply["code"] == "forbidden"
    listed = (await w.ok("qa.list", HOST))["questions"]
    assert {q["text"] for q in listed} == {"shy question", "another"}
    assert all(q.get("participant_id") is None for q in listed)


async def test_anonymous_refused_when_registry_does_not_answer(w: Webinar):
    message = await w.fails("qa.ask", ALICE, "forbidden", text="anyone?", anonymous=True)
    assert "anonymous" in message
    await w.ok("qa.ask", ALICE, text="with my name then")
