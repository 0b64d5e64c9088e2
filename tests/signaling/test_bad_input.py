"""Bad frames get an error and the connection stays up; floods get rate_limited, then closed."""

import asyncio
import json

from tests.signaling.conftest import Stack


async def test_bad_frames_get_errors_and_the_connection_stays_up(stack: Stack):
    room = await stack.webinar()
    host = await room.join("host")

    async def no_id_error(raw: str | bytes) -> dict:
        await host.send(raw)
        return await host.wait(lambda f: f.get("type") == "error" and "id" not in f)

    assert (await no_id_error("{not json"))["message"] == "frame is not JSON"
    assert "object" in (await no_id_error("[1, 2]"))["message"]
    assert "id is required" in (await no_id_error(json.dumps({"type": "ping"})))["message"]
    assert "binary" in (await no_id_error(b"\x00\x01"))["message"]
    too_big = json.dumps({"id": 1, "type": "chat.send", "text": "x" * 70_000})
    assert "larger than 65536" in (await no_id_error(too_big))["message"]
    reply = await host.error("dance", "invalid")
    assert reply["message"] == "unknown request type 'dance'"
    await host.send({"id": 99, "type": 5})
    assert (await host.wait(lambda f: f.get("id") == 99))["code"] == "invalid"
    reply = await host.error("participant.promote", "invalid")
    assert "participant_id is required" in reply["message"]
    await host.error("participant.remove", "invalid", participant_id="x" * 65)
    await host.error("participant.remove", "invalid", participant_id=42)
    await host.error("participant.mute", "invalid", participant_id="p", kind="audio", muted="no")
    await host.error(
        "participant.remove", "invalid", participant_id=host.welcome["participant"]["id"]
    )
    await host.ok("ping")
    assert not host.done


async def test_a_burst_is_rate_limited_but_the_connection_survives(stack: Stack):
    room = await stack.webinar()
    attendee = await room.join("attendee")
    for i in range(80):
        await attendee.send({"id": i, "type": "ping"})
    replies = [await attendee.wait(lambda f, i=i: f.get("id") == i) for i in range(80)]
    limited = [r for r in replies if r["type"] == "error"]
    assert limited and all(r["code"] == "rate_limited" for r in limited)
    assert sum(r["type"] == "ok" for r in replies) >= 60
    await asyncio.sleep(0.5)
    await attendee.ok("ping")


async def test_a_flood_is_closed(stack: Stack):
    room = await stack.webinar()
    attendee = await room.join("attendee", replica=1)
    for i in range(300):
        await attendee.send({"id": i, "type": "ping"})
    code, reason = await attendee.closed()
    assert code == 4429 and reason == "too many requests"
    assert attendee.frames[-1] == {"type": "error", "code": "rate_limited",
                                   "message": "too many requests; connection closed"}  # fmt: skip
    assert any(f.get("code") == "rate_limited" and "id" in f for f in attendee.frames)
