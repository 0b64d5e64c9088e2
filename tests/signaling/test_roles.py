"""Roles on the stage: permissions, hands, promote/demote, mute, remove — across replicas."""

import asyncio

from tests.signaling.conftest import OFFER, Stack


async def test_attendee_may_not_moderate_or_publish(stack: Stack):
    room = await stack.webinar()
    await stack.media_node("n1")
    await room.started()
    attendee = await room.join("attendee", replica=1)
    panelist = await room.join("panelist", pid="p_target")
    me = attendee.welcome["participant"]["id"]
    reply = await attendee.error("publish", "forbidden", sdp=OFFER)
    assert "stage" in reply["message"]
    for kind, fields in [
        ("participant.promote", {"participant_id": me}),
        ("participant.demote", {"participant_id": me}),
        ("participant.remove", {"participant_id": "p_target"}),
        ("participant.mute", {"participant_id": "p_target", "kind": "audio"}),
        ("hand.lower", {"participant_id": "p_target"}),
        ("webinar.start", {}),
        ("webinar.end", {}),
        ("room.lock", {}),
        ("restream.start", {"url": "rtmp://example.com/live"}),
    ]:
        reply = await attendee.error(kind, "forbidden", **fields)
        assert reply["message"].startswith("only"), reply
    assert (await attendee.ok("subscribe", sdp=OFFER))["sdp"].startswith("v=0")
    await panelist.ok("ping")  # the panelist was not removed
    await panelist.error("hand.raise", "forbidden")
    await panelist.error("participant.promote", "forbidden", participant_id=me)


async def test_stage_publishes_in_webinar_mode_everyone_in_meeting_mode(stack: Stack):
    node = await stack.media_node("n1")
    room = await stack.webinar()
    host = await room.started()
    panelist = await room.join("panelist", replica=1, pid="p_pub")
    for client in (host, panelist):
        reply = await client.ok("publish", sdp=OFFER)
        assert reply["sdp"].startswith("v=0") and reply["node_id"] == "n1"
    assert node.ops("publish", webinar_id=room.id, participant_id="p_pub")[0]["sdp"] == OFFER

    meeting = await stack.webinar(mode="meeting")
    await meeting.started()
    attendee = await meeting.join("attendee", replica=1)
    assert (await attendee.ok("publish", sdp=OFFER))["node_id"] == "n1"


async def test_hand_queue_is_ordered_and_only_hosts_see_it(stack: Stack):
    room = await stack.webinar()
    host = await room.started(replica=0)
    cohost = await room.join("cohost", replica=1)
    a1 = await room.join("attendee", replica=1, pid="a_1", name="One")
    a2 = await room.join("attendee", replica=0, pid="a_2", name="Two")
    a3 = await room.join("attendee", replica=1, pid="a_3", name="Three")
    for i, client in enumerate((a1, a2, a3), start=1):
        assert (await client.ok("hand.raise"))["position"] == i
        raised = await host.event("hand.raised", participant_id=f"a_{i}")
        assert raised["position"] == i
    assert [h["participant_id"] for h in raised["hands"]] == ["a_1", "a_2", "a_3"]
    await cohost.event("hand.raised", participant_id="a_3")
    assert (await a1.ok("hand.raise"))["position"] == 1  # raising twice keeps the place
    await a2.ok("hand.lower")
    lowered = await host.event("hand.lowered", participant_id="a_2")
    assert [h["name"] for h in lowered["hands"]] == ["One", "Three"]
    late_cohost = await room.join("cohost", replica=0)
    assert [h["participant_id"] for h in late_cohost.welcome["hands"]] == ["a_1", "a_3"]
    await asyncio.sleep(0.2)
    assert a1.events("hand.raised") == [] and a3.events("hand.lowered") == []
    await host.ok("hand.lower", participant_id="a_3")
    notice = await a3.wait(lambda f: f.get("type") == "notice")
    assert notice["notice"] == "hand.lowered"
    assert len(room.events.of("hand.raised")) == 3
    await room.events.wait("hand.lowered", participant_id="a_3")


async def test_promote_then_demote_an_attendee_on_another_replica(stack: Stack):
    node = await stack.media_node("n1")
    room = await stack.webinar()
    host = await room.started(replica=0)
    attendee = await room.join("attendee", replica=1, pid="a_star", name="Star")
    await attendee.ok("hand.raise")
    await attendee.error("publish", "forbidden", sdp=OFFER)
    reply = await host.ok("participant.promote", participant_id="a_star")
    assert reply["on_stage"] is True
    notice = await attendee.wait(lambda f: f.get("type") == "notice")
    assert notice["notice"] == "promoted"
    promoted = await attendee.event("participant.promoted", participant_id="a_star")
    assert promoted["by"] == host.welcome["participant"]["id"]
    await host.event("hand.lowered", participant_id="a_star")
    assert (await attendee.ok("publish", sdp=OFFER))["node_id"] == "n1"
    await host.error("participant.promote", "conflict", participant_id="a_star")
    stage = (await room.join("panelist")).welcome["stage"]
    star = next(s for s in stage if s["participant_id"] == "a_star")
    assert star["promoted"] is True and star["role"] == "attendee"

    reply = await host.ok("participant.demote", participant_id="a_star")
    assert reply["on_stage"] is False and reply["unpublished"] is True
    assert node.ops("unpublish", webinar_id=room.id, participant_id="a_star")
    await attendee.event("participant.demoted", participant_id="a_star")
    await attendee.error("publish", "forbidden", sdp=OFFER)
    await room.events.wait("participant.promoted", participant_id="a_star")
    await room.events.wait("participant.demoted", participant_id="a_star")
    await host.error("participant.promote", "not_found", participant_id="a_nobody")
    await host.error("participant.demote", "conflict", participant_id="a_star")


async def test_mute_is_sent_to_the_media_node_and_told_to_the_participant(stack: Stack):
    node = await stack.media_node("n1")
    room = await stack.webinar()
    host = await room.started()
    panelist = await room.join("panelist", replica=1, pid="p_loud")
    await panelist.ok("publish", sdp=OFFER)
    reply = await host.ok("participant.mute", participant_id="p_loud", kind="audio")
    assert reply["enforced"] is True
    assert node.ops("mute", participant_id="p_loud", kind="audio", muted=True)
    notice = await panelist.wait(lambda f: f.get("type") == "notice")
    assert notice["notice"] == "muted" and notice["data"]["kind"] == "audio"
    muted = await room.events.wait("participant.muted", participant_id="p_loud")
    assert muted["kind"] == "audio" and muted["muted"] is True
    await host.error("participant.mute", "forbidden", participant_id="p_loud", kind="audio",
                     muted=False)  # fmt: skip
    await panelist.ok("participant.mute", participant_id="p_loud", kind="audio", muted=False)
    assert node.ops("mute", participant_id="p_loud", muted=False)
    await host.error("participant.mute", "invalid", participant_id="p_loud", kind="smell")
    await host.error("participant.mute", "not_found", participant_id="p_ghost", kind="video")


async def test_removed_participant_is_disconnected_and_cannot_rejoin(stack: Stack):
    room = await stack.webinar()
    host = await room.started(replica=0)
    cohost = await room.join("cohost", replica=1)
    token = room.token("attendee", pid="a_troll", name="Troll")
    troll = await stack.join(token, replica=1)
    await troll.ok("hand.raise")
    await cohost.error("participant.remove", "forbidden", participant_id=room.created["host"]
                       ["participant_id"])  # fmt: skip
    reply = await host.ok("participant.remove", participant_id="a_troll")
    assert reply["name"] == "Troll"
    code, reason = await troll.closed()
    assert code == 4403 and reason == "removed by a host"
    assert troll.frames[-1]["type"] == "error" and "removed" in troll.frames[-1]["message"]
    removed = await room.events.wait("participant.removed", participant_id="a_troll")
    assert removed["by"] == host.welcome["participant"]["id"]
    assert (await room.events.wait("participant.left", participant_id="a_troll"))["reason"] == (
        "removed"
    )
    await host.event("hand.lowered", participant_id="a_troll")
    assert await stack.redis.sismember(f"wb:{room.id}:revoked", "a_troll")
    for replica in (0, 1):
        code, frame = await stack.refused(token, replica)
        assert code == 4403 and "revoked" in frame["message"]
    await host.error("participant.remove", "not_found", participant_id="a_troll")


async def test_hosts_list_everyone_present_attendees_may_not(stack: Stack):
    room = await stack.webinar()
    attendee = await room.join("attendee", replica=1, pid="a_early", name="Early")
    host = await room.started(replica=0)
    await attendee.ok("hand.raise")
    listed = await host.ok("participant.list")
    people = {p["id"]: p for p in listed["participants"]}
    assert people["a_early"]["name"] == "Early" and people["a_early"]["on_stage"] is False
    assert people[host.welcome["participant"]["id"]]["on_stage"] is True
    assert [h["participant_id"] for h in listed["hands"]] == ["a_early"]
    await attendee.error("participant.list", "forbidden")
