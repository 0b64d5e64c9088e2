"""Joining: welcome, tokens, lobby, capacity, lock, grace period, end."""

import asyncio
import json
import logging
import time

from services.common.tokens import Role, TokenIssuer, generate_keypair
from tests.registry.conftest import ADMIN
from tests.signaling.conftest import GRACE, Stack


async def test_host_welcome_has_participant_webinar_stage_hands_and_slots(stack: Stack):
    room = await stack.webinar(title="Launch")
    host = await room.join("host")
    w = host.welcome
    assert w["participant"]["role"] == "host" and w["participant"]["on_stage"] is True
    assert w["webinar"]["id"] == room.id and w["webinar"]["title"] == "Launch"
    assert w["webinar"]["mode"] == "webinar" and w["webinar"]["started"] is False
    assert "host_id" not in w["webinar"] and "organizer_id" not in w["webinar"]
    assert [s["participant_id"] for s in w["stage"]] == [w["participant"]["id"]]
    assert w["hands"] == [] and w["lobby"] is False
    assert w["slots"] == {"audio": 6, "video": 6, "screen": 1}
    joined = await room.events.wait("participant.joined", participant_id=w["participant"]["id"])
    assert joined["role"] == "host"


async def test_registered_attendee_waits_in_lobby_until_start(stack: Stack):
    room = await stack.webinar()
    resp = await stack.http.post(
        f"/v1/webinars/{room.id}/registrations", json={"name": "Ann", "email": "ann@example.com"}
    )
    token = resp.json()["token"]
    ann = await stack.join(token, replica=1)
    assert ann.welcome["lobby"] is True and ann.welcome["participant"]["name"] == "Ann"
    assert "hands" not in ann.welcome
    await ann.error("subscribe", "forbidden", sdp="v=0\r\nm=audio 9 RTP 0\r\n")
    await ann.error("hand.raise", "forbidden")
    host = await room.join("host", replica=0)
    await host.ok("webinar.start")
    started = await ann.event("webinar.started")
    assert started["by"] == host.welcome["participant"]["id"]
    await room.events.wait("webinar.started")
    late = await room.join("attendee")
    assert late.welcome["lobby"] is False and late.welcome["webinar"]["started"] is True
    assert late.welcome["webinar"]["status"] == "live"


async def test_forged_expired_and_garbage_tokens_never_get_a_welcome(stack: Stack):
    room = await stack.webinar()
    forged = TokenIssuer(generate_keypair()[0]).issue(
        room.id, "x1", "Mallory", Role.HOST, expires_at=2_000_000_000
    )
    code, frame = await stack.refused(forged)
    assert code == 4401 and frame["code"] == "forbidden" and "invalid" in frame["message"]
    expired = stack.issuer.issue(room.id, "x2", "Old", Role.ATTENDEE, expires_at=1_000_000)
    code, frame = await stack.refused(expired, replica=1)
    assert code == 4401 and "expired" in frame["message"]
    code, frame = await stack.refused("not-a-token")
    assert code == 4401


async def test_token_for_unknown_webinar_is_not_found(stack: Stack):
    code, frame = await stack.refused(stack.token("nosuchwebinar", "attendee"))
    assert code == 4404 and frame["code"] == "not_found"


async def test_capacity_counts_present_attendees(stack: Stack):
    room = await stack.webinar(capacity=2)
    await room.started()
    a1 = await room.join("attendee", replica=0)
    await room.join("attendee", replica=1)
    code, frame = await stack.refused(room.token("attendee"))
    assert code == 4409 and frame["code"] == "conflict" and "full" in frame["message"]
    panelist = await room.join("panelist", replica=1)  # the stage does not count
    assert panelist.welcome["participant"]["role"] == "panelist"
    a1_id = a1.welcome["participant"]["id"]
    await a1.close()
    await room.events.wait("participant.left", within=GRACE + 3, participant_id=a1_id)
    again = await room.join("attendee")
    assert again.welcome["participant"]["role"] == "attendee"


async def test_reconnect_within_grace_resumes_without_flapping(stack: Stack):
    room = await stack.webinar()
    await room.started()
    first = await room.join("attendee", replica=0, pid="a_resume", name="Res")
    await room.events.wait("participant.joined", participant_id="a_resume")
    await first.close()
    await asyncio.sleep(GRACE / 3)
    second = await room.join("attendee", replica=1, pid="a_resume", name="Res")
    assert second.welcome["resumed"] is True
    await asyncio.sleep(GRACE + 0.8)
    assert room.events.of("participant.left", participant_id="a_resume") == []
    assert len(room.events.of("participant.joined", participant_id="a_resume")) == 1
    await second.request("ping")
    await second.close()
    left = await room.events.wait("participant.left", within=GRACE + 3, participant_id="a_resume")
    assert left["reason"] == "disconnected"


async def test_second_connection_replaces_the_first(stack: Stack):
    room = await stack.webinar()
    token = room.token("panelist", pid="p_twice")
    first = await stack.join(token, replica=0)
    second = await stack.join(token, replica=1)
    code, _ = await first.closed()
    assert code == 4409 and first.frames[-1]["code"] == "conflict"
    assert second.welcome["resumed"] is True
    await second.ok("ping")


async def test_room_lock_refuses_new_attendees_only(stack: Stack):
    room = await stack.webinar()
    host = await room.started()
    inside = await room.join("attendee", replica=1, pid="a_inside")
    assert (await host.ok("room.lock"))["locked"] is True
    await room.events.wait("room.locked")
    await inside.event("room.locked")
    code, frame = await stack.refused(room.token("attendee"), replica=1)
    assert code == 4403 and "locked" in frame["message"]
    await inside.close()  # a reconnect within the grace period is no new attendee
    back = await room.join("attendee", replica=0, pid="a_inside")
    assert back.welcome["resumed"] is True and back.welcome["webinar"]["locked"] is True
    assert (await room.join("panelist")).welcome["participant"]["role"] == "panelist"
    await host.ok("room.unlock")
    await room.events.wait("room.unlocked")
    await room.join("attendee", replica=1)


async def test_webinar_end_disconnects_everyone_and_refuses_rejoin(stack: Stack):
    room = await stack.webinar()
    host = await room.started()
    attendee = await room.join("attendee", replica=1, pid="a_end")
    panelist = await room.join("panelist", replica=0)
    assert (await host.ok("webinar.end"))["ended"] is True
    for client in (host, attendee, panelist):
        code, reason = await client.closed()
        assert code == 4410 and reason == "webinar ended"
        assert (
            client.frames[-1]["type"] == "event" and client.frames[-1]["event"] == "webinar.ended"
        )
        assert len(client.events("webinar.ended")) == 1
    await room.events.wait("webinar.ended")
    assert (await room.events.wait("participant.left", participant_id="a_end"))["reason"] == "ended"
    code, _ = await stack.refused(room.token("attendee", pid="a_end"))
    assert code == 4410


async def test_rejected_registration_is_disconnected(stack: Stack):
    room = await stack.webinar(approval="manual")
    await room.started()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    resp = await stack.http.post(
        f"/v1/webinars/{room.id}/registrations", json={"name": "Bo", "email": "bo@example.com"}
    )
    rid = resp.json()["registration"]["id"]
    resp = await stack.http.post(
        f"/v1/webinars/{room.id}/registrations/{rid}/approve", headers=auth
    )
    bo = await stack.join(resp.json()["token"], replica=1)
    await stack.http.post(f"/v1/webinars/{room.id}/registrations/{rid}/reject", headers=auth)
    code, reason = await bo.closed()
    assert code == 4403 and reason == "access revoked"
    left = await room.events.wait("participant.left", within=GRACE + 3, participant_id=rid)
    assert left["reason"] == "disconnected"


async def test_join_tokens_do_not_reach_the_logs(stack: Stack, caplog):
    room = await stack.webinar()
    caplog.set_level(logging.INFO)
    await room.join("host")
    assert "WebSocket /v1/ws?token=***" in caplog.text
    assert room.host_token not in caplog.text


async def test_clients_of_a_dead_replica_leave_after_the_grace_period(stack: Stack):
    """A replica that crashed cannot start its clients' grace periods; its peers do."""
    room = await stack.webinar()
    host = await room.join("host")
    r, wid = stack.redis, room.id
    ghost = {"id": "a_ghost", "name": "Ghost", "role": "attendee", "joined_at": time.time()}
    await r.hset(f"sig:{wid}:people", "a_ghost", json.dumps(ghost))
    await r.hset(f"sig:{wid}:conn", "a_ghost", "s1")
    await r.sadd("sig:replica:crashed-1:sessions", f"{wid} a_ghost s1")
    await r.zadd("sig:replicas", {"crashed-1": time.time() - 60})
    left = await host.event("participant.left", within=GRACE + 4, participant_id="a_ghost")
    assert left["reason"] == "disconnected"
    await room.events.wait("participant.left", participant_id="a_ghost")
    assert not await r.hexists(f"sig:{wid}:people", "a_ghost")
    assert await r.zscore("sig:replicas", "crashed-1") is None


async def test_attendees_see_only_the_stage_come_and_go_in_webinar_mode(stack: Stack):
    room = await stack.webinar()
    host = await room.started()
    one = await room.join("attendee", pid="a_one")
    await room.join("attendee", replica=1, pid="a_two")
    await room.join("panelist", replica=1, pid="p_one")
    await host.event("participant.joined", participant_id="a_two")
    await one.event("participant.joined", participant_id="p_one")
    await asyncio.sleep(0.3)
    assert "a_two" not in {e["participant_id"] for e in one.events("participant.joined")}

    meeting = await stack.webinar(mode="meeting")
    await meeting.started()
    first = await meeting.join("attendee", pid="m_one")
    await meeting.join("attendee", replica=1, pid="m_two")
    await first.event("participant.joined", participant_id="m_two")
