"""Chat: audiences, history, moderation and flood control, through NATS as signaling calls it."""

import json
from typing import Any

from services.chat.main import running
from services.chat.models import MAX_CHAT_CHARS
from services.common.subjects import EVENTS_STREAM
from tests.chat.conftest import ALICE, BOB, CAROL, COHOST, HOST, PANELIST, P, Webinar


def texts(reply: dict[str, Any]) -> list[str]:
    return [m["text"] for m in reply["messages"]]


async def test_message_to_everyone_is_a_cloudevent_for_everyone(w: Webinar):
    reply = await w.ok("chat.send", ALICE, text="Hello <b>all</b> & you", to="everyone")
    message = reply["message"]
    assert message["text"] == "Hello <b>all</b> & you"  # plain text, stored as-is
    assert message["sender"] == {"id": "alice", "name": "Alice", "role": "attendee"}
    event = await w.events.next("chat.message")
    assert event.type == "io.webinar.chat.message.v1"
    assert event.subject == w.id and event.source == "/services/chat"
    assert event.data["id"] == message["id"] and event.data["audience"] == "everyone"
    assert all(p.sees(event) for p in (HOST, PANELIST, BOB, CAROL))


async def test_panelists_only_message_never_reaches_attendees(w: Webinar):
    await w.ok("chat.send", ALICE, text="Question for the speakers", to="panelists")
    event = await w.events.next("chat.message")
    assert event.data["audience"] == "panelists"
    assert HOST.sees(event) and COHOST.sees(event) and PANELIST.sees(event)
    assert not BOB.sees(event) and not CAROL.sees(event)
    promoted = P("dave", "attendee", on_stage=True)
    assert promoted.sees(event)
    # History: the speakers and the sender have it, other attendees do not.
    for who in (HOST, PANELIST, ALICE):
        assert texts(await w.ok("chat.history", who)) == ["Question for the speakers"]
    assert texts(await w.ok("chat.history", BOB)) == []


async def test_private_message_reaches_only_recipient_and_sender(w: Webinar):
    await w.ok("chat.send", ALICE, text="psst, Bob", to="bob")
    event = await w.events.next("chat.message")
    assert event.data["audience"] == "private"
    assert sorted(event.data["recipients"]) == ["alice", "bob"]
    assert ALICE.sees(event) and BOB.sees(event)
    assert not CAROL.sees(event) and not HOST.sees(event) and not PANELIST.sees(event)
    assert texts(await w.ok("chat.history", BOB)) == ["psst, Bob"]
    assert texts(await w.ok("chat.history", ALICE)) == ["psst, Bob"]
    assert texts(await w.ok("chat.history", CAROL)) == []
    assert texts(await w.ok("chat.history", HOST)) == []
    await w.fails("chat.send", ALICE, "invalid", text="me", to="alice")


async def test_history_survives_a_restart_and_respects_visibility(settings, webinar: Webinar):
    w = webinar
    async with running(settings):
        await w.ok("chat.send", HOST, text="1 welcome", to="everyone")
        await w.ok("chat.send", ALICE, text="2 to speakers", to="panelists")
        await w.ok("chat.send", BOB, text="3 bob to carol", to="carol")
        await w.ok("chat.send", PANELIST, text="4 panel to alice", to="alice")
        await w.ok("chat.send", CAROL, text="5 hi all", to="everyone")
    # The service is gone; a new one (as after a crash or a rollout) serves the same state.
    async with running(settings):
        assert texts(await w.ok("chat.history", ALICE)) == [
            "1 welcome", "2 to speakers", "4 panel to alice", "5 hi all"]  # fmt: skip
        assert texts(await w.ok("chat.history", BOB)) == ["1 welcome", "3 bob to carol", "5 hi all"]
        assert texts(await w.ok("chat.history", CAROL)) == [
            "1 welcome", "3 bob to carol", "5 hi all"]  # fmt: skip
        assert texts(await w.ok("chat.history", PANELIST)) == [
            "1 welcome", "2 to speakers", "4 panel to alice", "5 hi all"]  # fmt: skip
        assert texts(await w.ok("chat.history", HOST)) == [
            "1 welcome", "2 to speakers", "5 hi all"]  # fmt: skip
    # Every acknowledged message also reached the durable event stream.
    js = w.nc.jetstream()
    sub = await js.subscribe(
        f"webinar.{w.id}.chat.message", stream=EVENTS_STREAM, ordered_consumer=True
    )
    stored = [json.loads((await sub.next_msg(timeout=5)).data)["data"]["text"] for _ in range(5)]
    await sub.unsubscribe()
    assert stored == ["1 welcome", "2 to speakers", "3 bob to carol", "4 panel to alice",
                      "5 hi all"]  # fmt: skip


async def test_history_pages_back_with_before(w: Webinar):
    for i in range(5):
        await w.ok("chat.send", HOST, text=f"m{i}", to="everyone")
    page = await w.ok("chat.history", ALICE, limit=2)
    assert texts(page) == ["m3", "m4"]
    page = await w.ok("chat.history", ALICE, limit=2, before=page["before"])
    assert texts(page) == ["m1", "m2"]
    page = await w.ok("chat.history", ALICE, limit=2, before=page["before"])
    assert texts(page) == ["m0"] and page["before"] is None
    await w.fails("chat.history", ALICE, "invalid", before="not-a-cursor")


async def test_host_deletes_a_message_for_everyone(w: Webinar):
    keep = (await w.ok("chat.send", ALICE, text="fine", to="everyone"))["message"]["id"]
    spam = (await w.ok("chat.send", BOB, text="buy now", to="everyone"))["message"]["id"]
    await w.fails("chat.delete", ALICE, "forbidden", message_id=spam)
    await w.fails("chat.delete", PANELIST, "forbidden", message_id=spam)
    await w.ok("chat.delete", COHOST, message_id=spam)
    event = await w.events.next("chat.deleted")
    assert event.data["message_id"] == spam and event.data["audience"] == "everyone"
    assert all(p.sees(event) for p in (ALICE, BOB, CAROL, HOST))
    for who in (ALICE, BOB, HOST):
        assert [m["id"] for m in (await w.ok("chat.history", who))["messages"]] == [keep]
    await w.fails("chat.delete", HOST, "not_found", message_id=spam)


async def test_flood_is_rate_limited_across_replicas(settings, service, w: Webinar):
    # A second replica shares the queue group: the limit lives in Redis, not in one process.
    async with running(settings):
        replies = [await w.call("chat.send", ALICE, text=f"flood {i}") for i in range(8)]
    assert [r["ok"] for r in replies] == [True] * 5 + [False] * 3
    assert {r["code"] for r in replies[5:]} == {"rate_limited"}
    # Others are not affected by Alice's flood.
    await w.ok("chat.send", BOB, text="calm")
    assert len(texts(await w.ok("chat.history", CAROL))) == 6


async def test_oversized_or_control_characters_are_invalid(w: Webinar):
    message = await w.fails("chat.send", ALICE, "invalid", text="x" * (MAX_CHAT_CHARS + 1))
    assert "text" in message
    await w.ok("chat.send", ALICE, text="x" * MAX_CHAT_CHARS)
    for bad in ("bell\x07", "nul\x00", "esc\x1b[31mred", "rtl\u202eoverride", "   ", ""):
        message = await w.fails("chat.send", ALICE, "invalid", text=bad)
        assert message.startswith("invalid args.text"), message
    await w.ok("chat.send", ALICE, text="two\nlines\tand a tab, ünïcødé 🎉")
    assert texts(await w.ok("chat.history", BOB))[-1] == "two\nlines\tand a tab, ünïcødé 🎉"


async def test_bad_commands_get_invalid_replies(w: Webinar):
    assert (await w.raw("chat.send", b"not json"))["code"] == "invalid"
    assert (await w.raw("chat.send", b'{"webinar_id": "x"}'))["code"] == "invalid"
    body = {"webinar_id": "a.b", "participant": ALICE.ref(), "args": {"text": "hi"}}
    assert (await w.raw("chat.send", json.dumps(body).encode()))["code"] == "invalid"
    body = {"webinar_id": w.id, "participant": {**ALICE.ref(), "role": "king"},
            "args": {"text": "hi"}}  # fmt: skip
    assert (await w.raw("chat.send", json.dumps(body).encode()))["code"] == "invalid"
    await w.fails("chat.send", ALICE, "invalid", text="hi", colour="red")
    await w.fails("chat.send", ALICE, "invalid", text="hi", to="*")
    assert await w.call("chat.history", ALICE) == {
        "ok": True, "messages": [], "before": None,
        "chat": {"disabled": False, "slow_mode_seconds": 0, "muted": False},
    }  # fmt: skip


async def test_moderation_is_for_hosts_only(w: Webinar):
    for who in (ALICE, PANELIST):
        await w.fails("chat.mute", who, "forbidden", participant_id="bob")
        await w.fails("chat.disable", who, "forbidden", disabled=True)
        await w.fails("chat.slowmode", who, "forbidden", seconds=10)


async def test_muted_participant_cannot_write(w: Webinar):
    await w.ok("chat.mute", HOST, participant_id="bob", muted=True)
    assert (await w.ok("chat.history", BOB))["chat"]["muted"] is True
    assert (await w.ok("chat.history", ALICE))["chat"]["muted"] is False
    message = await w.fails("chat.send", BOB, "forbidden", text="hello?")
    assert "muted" in message
    await w.ok("chat.send", ALICE, text="I still can")
    await w.ok("chat.mute", HOST, participant_id="bob", muted=False)
    await w.ok("chat.send", BOB, text="back")
    assert texts(await w.ok("chat.history", CAROL)) == ["I still can", "back"]


async def test_disabled_chat_silences_attendees_only(w: Webinar):
    await w.ok("chat.disable", HOST, disabled=True)
    event = await w.events.next("chat.disabled")
    assert ALICE.sees(event) and event.data["by"] == "host1"
    await w.fails("chat.send", ALICE, "forbidden", text="hello?")
    assert (await w.ok("chat.history", ALICE))["chat"]["disabled"] is True
    await w.ok("chat.send", PANELIST, text="speakers still talk")
    await w.ok("chat.send", P("dave", "attendee", on_stage=True), text="on stage too")
    await w.ok("chat.disable", HOST, disabled=False)
    await w.events.next("chat.enabled")
    await w.ok("chat.send", ALICE, text="thanks")


async def test_slow_mode_spaces_attendee_messages(w: Webinar):
    await w.ok("chat.slowmode", HOST, seconds=30)
    assert (await w.ok("chat.history", ALICE))["chat"]["slow_mode_seconds"] == 30
    await w.ok("chat.send", ALICE, text="one")
    message = await w.fails("chat.send", ALICE, "rate_limited", text="two")
    assert "slow mode" in message
    await w.ok("chat.send", BOB, text="bob's one")
    await w.ok("chat.send", HOST, text="host a")
    await w.ok("chat.send", HOST, text="host b")
    await w.ok("chat.slowmode", HOST, seconds=0)
    await w.ok("chat.send", ALICE, text="two")


async def test_deleting_a_private_message_tells_only_its_recipients(w: Webinar):
    mid = (await w.ok("chat.send", ALICE, text="private slur", to="bob"))["message"]["id"]
    await w.ok("chat.delete", HOST, message_id=mid)
    event = await w.events.next("chat.deleted")
    assert ALICE.sees(event) and BOB.sees(event)
    assert not CAROL.sees(event) and not HOST.sees(event)
    assert texts(await w.ok("chat.history", BOB)) == []
