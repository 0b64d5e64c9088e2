"""Polls: hosts open and close them, everyone votes once, results to everyone or hosts only."""

import asyncio
from typing import Any

from tests.chat.conftest import ALICE, BOB, CAROL, COHOST, HOST, PANELIST, P, Webinar


async def open_poll(w: Webinar, **args: Any) -> dict[str, Any]:
    body = {"question": "Which day?", "options": ["Mon", "Tue", "Wed"], **args}
    poll: dict[str, Any] = (await w.ok("poll.create", HOST, **body))["poll"]
    return poll


async def test_single_choice_poll_counts_each_voter_once(w: Webinar):
    poll = await open_poll(w)
    opened = await w.events.next("poll.opened")
    assert opened.data["id"] == poll["id"] and opened.data["options"] == ["Mon", "Tue", "Wed"]
    assert BOB.sees(opened) and opened.data["counts"] == [0, 0, 0]

    reply = await w.ok("poll.vote", ALICE, poll_id=poll["id"], choices=[1])
    assert reply["counts"] == [0, 1, 0] and reply["voters"] == 1
    await w.fails("poll.vote", ALICE, "conflict", poll_id=poll["id"], choices=[2])
    await w.ok("poll.vote", BOB, poll_id=poll["id"], choices=[1])
    await w.ok("poll.vote", PANELIST, poll_id=poll["id"], choices=[0])
    voted = [await w.events.next("poll.voted") for _ in range(3)]
    assert [e.data["counts"] for e in voted] == [[0, 1, 0], [0, 2, 0], [1, 2, 0]]
    assert all(e.data["audience"] == "everyone" and CAROL.sees(e) for e in voted)

    mine = (await w.ok("poll.list", ALICE))["polls"]
    assert mine[0]["counts"] == [1, 2, 0] and mine[0]["my_choices"] == [1]
    assert (await w.ok("poll.list", CAROL))["polls"][0].get("my_choices") is None

    await w.fails("poll.close", ALICE, "forbidden", poll_id=poll["id"])
    closed = (await w.ok("poll.close", COHOST, poll_id=poll["id"]))["poll"]
    assert closed["status"] == "closed" and closed["counts"] == [1, 2, 0]
    event = await w.events.next("poll.closed")
    assert event.data["counts"] == [1, 2, 0] and event.data["voters"] == 3 and CAROL.sees(event)
    await w.fails("poll.vote", CAROL, "conflict", poll_id=poll["id"], choices=[0])
    await w.fails("poll.close", HOST, "conflict", poll_id=poll["id"])
    assert (await w.ok("poll.list", CAROL))["polls"][0]["status"] == "closed"


async def test_concurrent_votes_each_count_once(w: Webinar):
    poll = await open_poll(w)
    voters = [P(f"v{i}", "attendee") for i in range(30)]
    calls = [w.call("poll.vote", v, poll_id=poll["id"], choices=[i % 3])
             for i, v in enumerate(voters + voters[:10])]  # fmt: skip
    replies = await asyncio.gather(*calls)
    assert sum(r["ok"] for r in replies) == 30
    assert [r["code"] for r in replies if not r["ok"]] == ["conflict"] * 10
    listed = (await w.ok("poll.list", HOST))["polls"][0]
    assert listed["voters"] == 30 and listed["counts"] == [10, 10, 10]


async def test_hosts_only_results_stay_with_hosts(w: Webinar):
    poll = await open_poll(w, results="hosts")
    opened = await w.events.next("poll.opened")
    assert "counts" not in opened.data and ALICE.sees(opened)
    reply = await w.ok("poll.vote", ALICE, poll_id=poll["id"], choices=[2])
    assert "counts" not in reply and reply["choices"] == [2]
    voted = await w.events.next("poll.voted")
    assert voted.data["counts"] == [0, 0, 1]
    assert HOST.sees(voted) and COHOST.sees(voted)
    assert not ALICE.sees(voted) and not BOB.sees(voted) and not PANELIST.sees(voted)
    assert "counts" not in (await w.ok("poll.list", BOB))["polls"][0]
    assert (await w.ok("poll.list", HOST))["polls"][0]["counts"] == [0, 0, 1]
    await w.ok("poll.close", HOST, poll_id=poll["id"])
    closed = await w.events.next("poll.closed")
    assert "counts" not in closed.data and closed.data["voters"] == 1


async def test_multiple_choice_and_bad_votes(w: Webinar):
    multi = await open_poll(w, multiple=True)
    single = await open_poll(w)
    assert (await w.ok("poll.vote", ALICE, poll_id=multi["id"], choices=[0, 2]))["counts"] == [
        1, 0, 1]  # fmt: skip
    await w.fails("poll.vote", BOB, "invalid", poll_id=single["id"], choices=[0, 1])
    await w.fails("poll.vote", BOB, "invalid", poll_id=multi["id"], choices=[3])
    await w.fails("poll.vote", BOB, "invalid", poll_id=multi["id"], choices=[1, 1])
    await w.fails("poll.vote", BOB, "invalid", poll_id=multi["id"], choices=[])
    await w.fails("poll.vote", BOB, "not_found", poll_id="nosuchpoll", choices=[0])
    await w.ok("poll.vote", BOB, poll_id=single["id"], choices=[0])
    assert [p["id"] for p in (await w.ok("poll.list", BOB))["polls"]] == [multi["id"], single["id"]]


async def test_only_hosts_create_polls_and_options_are_checked(w: Webinar):
    for who in (ALICE, PANELIST):
        await w.fails("poll.create", who, "forbidden", question="Q?", options=["a", "b"])
    await w.fails("poll.create", HOST, "invalid", question="Q?", options=["only one"])
    await w.fails("poll.create", HOST, "invalid", question="Q?", options=["a", "a"])
    await w.fails(
        "poll.create", HOST, "invalid", question="Q?", options=[str(i) for i in range(11)]
    )
    await w.fails("poll.create", HOST, "invalid", question="bad\x00", options=["a", "b"])
    await w.fails("poll.create", HOST, "invalid", question="Q?", options=["a", "b"], results="me")
    assert (await w.ok("poll.list", HOST))["polls"] == []
