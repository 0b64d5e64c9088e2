"""Chat, Q&A and polls end to end, as users see them through the signaling WebSocket.

Host, panelist and attendees are spread over both signaling replicas; every request
goes client -> signaling -> NATS -> chat service, and every event comes back chat
service -> Redis outbox -> JetStream -> each replica -> the clients it concerns.
"""

import asyncio
import json

from services.chat.models import MAX_CHAT_CHARS
from tests.e2e.conftest import ChatUnderTest, chat_texts, everyone_saw, history
from tests.signaling.conftest import Client, Room


async def cast(room: Room) -> tuple[Client, Client, Client, Client, Client]:
    """Host (replica 0), panelist (1), attendees Alice (0), Bob (1) and Carol (0)."""
    host = await room.started(replica=0)
    panelist = await room.join("panelist", replica=1, pid="p_pia", name="Pia")
    alice = await room.join("attendee", replica=0, pid="a_alice", name="Alice")
    bob = await room.join("attendee", replica=1, pid="a_bob", name="Bob")
    carol = await room.join("attendee", replica=0, pid="a_carol", name="Carol")
    return host, panelist, alice, bob, carol


async def test_panelists_only_message_reaches_speakers_never_attendees(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    sent = await alice.ok("chat.send", text="Can you show the demo again?", to="panelists")
    assert sent["message"]["audience"] == "panelists"
    assert sent["message"]["sender"] == {"id": "a_alice", "name": "Alice", "role": "attendee"}
    for speaker in (host, panelist):
        seen = await speaker.event("chat.message", text="Can you show the demo again?")
        assert seen["sender"]["id"] == "a_alice" and seen["audience"] == "panelists"
    await panelist.ok("chat.send", text="Backstage: demo in 2 min", to="panelists")
    await host.event("chat.message", text="Backstage: demo in 2 min")

    everyone = [host, panelist, alice, bob, carol]
    await everyone_saw(everyone, host, "Welcome everyone")
    assert chat_texts(bob) == chat_texts(carol) == ["Welcome everyone"]
    # The attendee who wrote to the speakers has it in the reply, not pushed back.
    assert chat_texts(alice) == ["Welcome everyone"]
    assert chat_texts(host) == [
        "Can you show the demo again?", "Backstage: demo in 2 min", "Welcome everyone"
    ]  # fmt: skip
    # History holds to the same rule; the writer keeps their own message.
    assert await history(bob) == ["Welcome everyone"]
    assert await history(alice) == ["Can you show the demo again?", "Welcome everyone"]
    assert await history(panelist) == chat_texts(host)


async def test_private_message_reaches_only_its_recipient_and_the_reply_the_sender(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    sent = await alice.ok("chat.send", text="Bob, lunch after this?", to="a_bob")
    assert sent["message"]["audience"] == "private"
    got = await bob.event("chat.message", text="Bob, lunch after this?")
    assert got["sender"]["id"] == "a_alice" and got["to"] == "a_bob"
    await bob.ok("chat.send", text="Sure, 12:30", to=got["sender"]["id"])
    assert (await alice.event("chat.message", text="Sure, 12:30"))["sender"]["id"] == "a_bob"
    await host.ok("chat.send", text="Pia, you are next", to="p_pia")
    await panelist.event("chat.message", text="Pia, you are next")

    await everyone_saw([host, panelist, alice, bob, carol], carol, "Great talk")
    assert chat_texts(carol) == ["Great talk"]
    assert chat_texts(host) == ["Pia, you are next", "Great talk"]
    assert chat_texts(panelist) == ["Pia, you are next", "Great talk"]
    for writer in (alice, bob):  # both ends of the conversation, nobody else
        assert chat_texts(writer) == ["Bob, lunch after this?", "Sure, 12:30", "Great talk"]
        assert await history(writer) == chat_texts(writer)
    assert await history(carol) == ["Great talk"]
    assert await history(host) == ["Pia, you are next", "Great talk"]
    # Writing to yourself is refused.
    await carol.error("chat.send", "invalid", text="note to self", to="a_carol")


async def test_history_survives_a_chat_service_restart_and_respects_visibility(
    room: Room, chat: ChatUnderTest
):
    host, panelist, alice, bob, carol = await cast(room)
    await host.ok("chat.send", text="1 welcome", to="everyone")
    await alice.ok("chat.send", text="2 to the speakers", to="panelists")
    await bob.ok("chat.send", text="3 bob to carol", to="a_carol")
    await panelist.ok("chat.send", text="4 panel talk", to="panelists")
    await carol.ok("chat.send", text="5 hello", to="everyone")
    await carol.event("chat.message", text="5 hello")

    await chat.stop()
    refused = await alice.error("chat.send", "unavailable", text="anyone?", to="everyone")
    assert "chat" in refused["message"]
    await alice.ok("ping")  # the connection stays up
    await chat.start()

    assert await history(host) == ["1 welcome", "2 to the speakers", "4 panel talk", "5 hello"]
    assert await history(panelist) == await history(host)
    assert await history(alice) == ["1 welcome", "2 to the speakers", "5 hello"]
    assert await history(carol) == ["1 welcome", "3 bob to carol", "5 hello"]
    # Late joiner and a reconnect through the other replica get the same view.
    dave = await room.join("attendee", replica=1, pid="a_dave")
    assert await history(dave) == ["1 welcome", "5 hello"]
    await bob.close()
    bob_again = await room.join("attendee", replica=0, pid="a_bob", name="Bob")
    assert await history(bob_again) == ["1 welcome", "3 bob to carol", "5 hello"]
    # And the restarted service carries on.
    await everyone_saw([host, panelist, alice, carol, dave, bob_again], alice, "6 back")
    assert (await history(dave))[-1] == "6 back"


async def test_history_pages_back_with_the_cursor(room: Room):
    host = await room.started()
    speakers = [host] + [await room.join("panelist", replica=i % 2) for i in range(2)]
    for i in range(12):
        await speakers[i % 3].ok("chat.send", text=f"m{i:02d}", to="everyone")
    attendee = await room.join("attendee", replica=1)
    page = await attendee.ok("chat.history", limit=5)
    assert [m["text"] for m in page["messages"]] == [f"m{i:02d}" for i in range(7, 12)]
    older = await attendee.ok("chat.history", limit=10, before=page["before"])
    assert [m["text"] for m in older["messages"]] == [f"m{i:02d}" for i in range(7)]
    assert older["before"] is None
    assert page["chat"] == {"disabled": False, "slow_mode_seconds": 0, "muted": False}


async def test_upvotes_are_counted_once_per_participant_and_the_list_is_sorted(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    first = (await alice.ok("qa.ask", text="Is it open source?"))["question"]
    second = (await bob.ok("qa.ask", text="Does it scale?"))["question"]
    third = (await carol.ok("qa.ask", text="Who pays?", anonymous=True))["question"]
    for client in (host, panelist, alice, bob, carol):
        asked = await client.event("qa.asked", id=third["id"])
        assert asked["anonymous"] is True and asked.get("participant_id") is None
        assert "a_carol" not in json.dumps(asked) and "Carol" not in json.dumps(asked)

    # Carol clicks twice at once (one through each replica would be the same person).
    replies = await asyncio.gather(
        carol.request("qa.upvote", question_id=second["id"]),
        carol.request("qa.upvote", question_id=second["id"]),
    )
    assert sorted(r["type"] for r in replies) == ["error", "ok"]
    assert next(r for r in replies if r["type"] == "error")["code"] == "conflict"
    await alice.ok("qa.upvote", question_id=second["id"])
    await alice.error("qa.upvote", "conflict", question_id=second["id"])
    assert (await panelist.ok("qa.upvote", question_id=third["id"]))["votes"] == 1
    await bob.error("qa.upvote", "not_found", question_id="nope")

    for client in (host, alice, bob):
        await client.event("qa.upvoted", question_id=second["id"], votes=2)
        await client.event("qa.upvoted", question_id=third["id"], votes=1)
    listed = (await alice.ok("qa.list"))["questions"]
    assert [(q["id"], q["votes"]) for q in listed] == [
        (second["id"], 2), (third["id"], 1), (first["id"], 0)
    ]  # fmt: skip
    assert [q["voted"] for q in listed] == [True, False, False]
    assert [q["votes"] for q in (await host.ok("qa.list"))["questions"]] == [2, 1, 0]
    assert [e["votes"] for e in bob.events("qa.upvoted")] == [1, 2, 1]

    answered = await panelist.ok("qa.answer", question_id=first["id"], text="Yes, MIT")
    assert answered["question"]["status"] == "answered"
    seen = await carol.event("qa.answered", id=first["id"])
    assert seen["answer"] == "Yes, MIT" and seen["answered_by"] == "p_pia"
    await host.ok("qa.dismiss", question_id=third["id"])
    await bob.event("qa.dismissed", question_id=third["id"])
    assert [q["id"] for q in (await bob.ok("qa.list"))["questions"]] == [second["id"], first["id"]]


async def test_a_deleted_message_disappears_for_everyone(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    everyone = [host, panelist, alice, bob, carol]
    await everyone_saw(everyone, alice, "keep me")
    spam = await everyone_saw(everyone, bob, "BUY CHEAP TICKETS")
    await alice.error("chat.delete", "forbidden", message_id=spam["id"])
    await panelist.error("chat.delete", "forbidden", message_id=spam["id"])

    deleted = await host.ok("chat.delete", message_id=spam["id"])
    assert deleted["message_id"] == spam["id"]
    for client in everyone:
        seen = await client.event("chat.deleted", message_id=spam["id"])
        assert seen["deleted_by"] == room.created["host"]["participant_id"]
        assert await history(client) == ["keep me"]
    await host.error("chat.delete", "not_found", message_id=spam["id"])

    # A deleted private message goes away only for the two who could see it.
    secret = (await alice.ok("chat.send", text="psst", to="a_carol"))["message"]
    await carol.event("chat.message", text="psst")
    await host.ok("chat.delete", message_id=secret["id"])
    await alice.event("chat.deleted", message_id=secret["id"])
    await carol.event("chat.deleted", message_id=secret["id"])
    await everyone_saw(everyone, panelist, "moving on")
    assert [len(c.events("chat.deleted")) for c in everyone] == [1, 1, 2, 1, 2]
    assert await history(carol) == ["keep me", "moving on"]


async def test_a_flood_is_rate_limited_and_the_connection_stays(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    replies = [await bob.request("chat.send", text=f"spam {i}", to="everyone") for i in range(8)]
    assert [r["type"] for r in replies] == ["ok"] * 5 + ["error"] * 3
    assert all(r["code"] == "rate_limited" for r in replies[5:])
    assert "retry in" in replies[5]["message"]
    qa = await bob.error("qa.ask", "rate_limited", text="and a question")
    assert "messages per" in qa["message"]
    await bob.ok("ping")

    await everyone_saw([host, panelist, alice, bob, carol], alice, "calm")
    assert chat_texts(carol) == [f"spam {i}" for i in range(5)] + ["calm"]
    assert await history(host) == [f"spam {i}" for i in range(5)] + ["calm"]

    # Slow mode: one message per interval for attendees; the speakers are not slowed.
    assert (await host.ok("chat.slowmode", seconds=60))["seconds"] == 60
    await carol.ok("chat.send", text="first", to="everyone")
    slowed = await carol.error("chat.send", "rate_limited", text="second", to="everyone")
    assert "slow mode" in slowed["message"]
    await panelist.ok("chat.send", text="speaker 1", to="everyone")
    await everyone_saw([host, panelist, alice, bob, carol], panelist, "speaker 2")
    assert chat_texts(bob)[-4:] == ["calm", "first", "speaker 1", "speaker 2"]
    assert (await carol.ok("chat.history"))["chat"]["slow_mode_seconds"] == 60


async def test_oversized_or_control_character_text_is_invalid(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    too_long = await alice.error("chat.send", "invalid", text="x" * (MAX_CHAT_CHARS + 1))
    assert "text" in too_long["message"]
    for bad in ("ring \x07 bell", "null\x00byte", "esc \x1b[31m red", "rtl \u202e txt"):
        refused = await alice.error("chat.send", "invalid", text=bad, to="everyone")
        assert "control character" in refused["message"], refused
    await alice.error("chat.send", "invalid", text="   ")
    await alice.error("chat.send", "invalid", text="hi", to="everyone", color="red")
    await alice.error("qa.ask", "invalid", text="why\x07")
    # Plain text at the limit, with newline, tab and markup, arrives exactly as written.
    longest = "y" * MAX_CHAT_CHARS
    await alice.ok("chat.send", text=longest, to="everyone")
    markup = 'line 1\n\t<script>alert("x")</script> & <b>bold</b>'
    await everyone_saw([host, panelist, alice, bob, carol], alice, markup)
    assert chat_texts(bob) == [longest, markup]
    assert await history(carol) == [longest, markup]


async def test_poll_votes_are_counted_once_per_voter(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    everyone = [host, panelist, alice, bob, carol]
    poll = (await host.ok("poll.create", question="Tabs or spaces?",
                          options=["tabs", "spaces", "both"]))["poll"]  # fmt: skip
    for client in everyone:
        opened = await client.event("poll.opened", id=poll["id"])
        assert opened["options"] == ["tabs", "spaces", "both"] and opened["counts"] == [0, 0, 0]

    votes = await asyncio.gather(
        alice.request("poll.vote", poll_id=poll["id"], choices=[1]),
        alice.request("poll.vote", poll_id=poll["id"], choices=[0]),
        bob.request("poll.vote", poll_id=poll["id"], choices=[1]),
        panelist.request("poll.vote", poll_id=poll["id"], choices=[0]),
    )
    assert sorted(v["type"] for v in votes) == ["error", "ok", "ok", "ok"]
    assert next(v for v in votes if v["type"] == "error")["code"] == "conflict"
    await bob.error("poll.vote", "conflict", poll_id=poll["id"], choices=[2])
    await carol.error("poll.vote", "invalid", poll_id=poll["id"], choices=[0, 1])
    await carol.error("poll.vote", "invalid", poll_id=poll["id"], choices=[7])
    await carol.ok("poll.vote", poll_id=poll["id"], choices=[2])

    last = await bob.event("poll.voted", poll_id=poll["id"], voters=4)
    assert sum(last["counts"]) == 4 and last["counts"][2] == 1
    listed = (await alice.ok("poll.list"))["polls"]
    assert [(p["id"], p["voters"], p["counts"]) for p in listed] == [
        (poll["id"], 4, last["counts"])
    ]
    assert listed[0]["my_choices"] in ([0], [1])

    closed = (await host.ok("poll.close", poll_id=poll["id"]))["poll"]
    assert closed["status"] == "closed" and closed["counts"] == last["counts"]
    for client in everyone:
        final = await client.event("poll.closed", id=poll["id"])
        assert final["counts"] == last["counts"] and final["voters"] == 4
    late = await room.join("attendee", replica=1)
    await late.error("poll.vote", "conflict", poll_id=poll["id"], choices=[0])


async def test_hosts_only_poll_results_stay_with_the_hosts(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    poll = (await host.ok("poll.create", question="Rate the talk", options=["good", "bad"],
                          results="hosts"))["poll"]  # fmt: skip
    opened = await alice.event("poll.opened", id=poll["id"])
    assert "counts" not in opened
    mine = await alice.ok("poll.vote", poll_id=poll["id"], choices=[0])
    assert "counts" not in mine
    voted = await host.event("poll.voted", poll_id=poll["id"])
    assert voted["counts"] == [1, 0]
    await everyone_saw([host, panelist, alice, bob, carol], bob, "after the vote")
    assert alice.events("poll.voted") == bob.events("poll.voted") == []
    assert "counts" not in (await carol.ok("poll.list"))["polls"][0]


async def test_attendees_cannot_moderate_answer_or_run_polls(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    message = await everyone_saw([host, alice, bob], carol, "hello")
    question = (await carol.ok("qa.ask", text="When is the break?"))["question"]
    poll = (await host.ok("poll.create", question="Coffee?", options=["yes", "no"]))["poll"]
    attempts = [
        ("chat.delete", {"message_id": message["id"]}),
        ("qa.answer", {"question_id": question["id"], "text": "never"}),
        ("qa.dismiss", {"question_id": question["id"]}),
        ("poll.create", {"question": "Fire the host?", "options": ["yes", "no"]}),
        ("poll.close", {"poll_id": poll["id"]}),
        ("chat.disable", {"disabled": True}),
        ("chat.mute", {"participant_id": "a_carol", "muted": True}),
        ("chat.slowmode", {"seconds": 60}),
    ]
    for attendee in (alice, bob):
        for kind, fields in attempts:
            await attendee.error(kind, "forbidden", **fields)
    # Panelists answer questions but do not run polls.
    await panelist.error("poll.create", "forbidden", question="Q", options=["a", "b"])
    # Nothing changed for anyone.
    assert await history(alice) == ["hello"]
    assert [q["status"] for q in (await alice.ok("qa.list"))["questions"]] == ["open"]
    assert [p["status"] for p in (await bob.ok("poll.list"))["polls"]] == ["open"]
    await carol.ok("chat.send", text="still here", to="everyone")
    await bob.event("chat.message", text="still here")
    assert alice.events("poll.opened") and not alice.events("poll.closed")


async def test_chat_disable_stops_attendees_writing_and_enable_lets_them_again(room: Room):
    host, panelist, alice, bob, carol = await cast(room)
    await host.ok("chat.disable", disabled=True)
    for client in (host, panelist, alice, bob, carol):
        await client.event("chat.disabled")
    refused = await bob.error("chat.send", "forbidden", text="hello?", to="everyone")
    assert "disabled" in refused["message"]
    await alice.error("chat.send", "forbidden", text="psst", to="a_bob")
    state = await carol.ok("chat.history")
    assert state["chat"]["disabled"] is True
    # The speakers go on.
    await everyone_saw([host, panelist, alice, bob, carol], panelist, "speakers only now")

    # A muted attendee stays silent even after the chat is enabled again.
    await host.ok("chat.mute", participant_id="a_carol", muted=True)
    await host.ok("chat.disable", disabled=False)
    for client in (alice, bob, carol):
        await client.event("chat.enabled")
    await everyone_saw([host, panelist, alice, bob, carol], bob, "I can talk again")
    await carol.error("chat.send", "forbidden", text="me too", to="everyone")
    assert (await carol.ok("chat.history"))["chat"]["muted"] is True
    assert chat_texts(alice) == ["speakers only now", "I can talk again"]
