"""chat.*, qa.*, poll.* go to the chat service over NATS; its events reach the right clients."""

import json

from services.common.events import make_event
from tests.signaling.conftest import Stack


class ChatDouble:
    """A chat service double on real NATS: records requests and answers them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []

    async def on_msg(self, msg):
        body = json.loads(msg.data)
        self.requests.append((msg.subject, body))
        if body["args"].get("text") == "forbidden words":
            reply = {"ok": False, "code": "forbidden", "message": "chat is disabled"}
        else:
            reply = {"ok": True, "message_id": "m1", "items": []}
        await msg.respond(json.dumps(reply).encode())


async def test_chat_requests_are_forwarded_with_the_participant(stack: Stack):
    chat = ChatDouble()
    sub = await stack.nc.subscribe("svc.chat.>", cb=chat.on_msg)
    try:
        room = await stack.webinar()
        host = await room.started()
        attendee = await room.join("attendee", replica=1, pid="a_chat", name="Chatty")
        reply = await attendee.ok("chat.send", text="hello", to="everyone")
        assert reply["message_id"] == "m1"
        subject, body = chat.requests[-1]
        assert subject == "svc.chat.chat.send"
        assert body == {
            "webinar_id": room.id,
            "participant": {
                "id": "a_chat",
                "name": "Chatty",
                "role": "attendee",
                "on_stage": False,
            },
            "args": {"text": "hello", "to": "everyone"},
        }
        reply = await attendee.error("chat.send", "forbidden", text="forbidden words")
        assert reply["message"] == "chat is disabled"
        for kind, fields in [("chat.history", {}), ("qa.ask", {"text": "why?"}),
                             ("qa.list", {}), ("poll.vote", {"poll_id": "p", "choices": [0]}),
                             ("poll.list", {})]:  # fmt: skip
            await attendee.ok(kind, **fields)
            assert chat.requests[-1][0] == f"svc.chat.{kind}"
            assert chat.requests[-1][1]["args"] == fields
        host_requests = [
            ("chat.delete", {"message_id": "m1"}), ("chat.mute", {"participant_id": "a_chat",
            "muted": True}), ("chat.slowmode", {"seconds": 5}), ("qa.upvote", {"question_id": "q"}),
            ("qa.answer", {"question_id": "q", "text": "because"}),
            ("qa.dismiss", {"question_id": "q"}), ("poll.close", {"poll_id": "p"}),
            ("poll.create", {"question": "Tea?", "options": ["yes", "no"]}),
        ]  # fmt: skip
        for kind, fields in host_requests:
            await host.ok(kind, **fields)
            assert chat.requests[-1][0] == f"svc.chat.{kind}"
            assert chat.requests[-1][1]["args"] == fields
            assert chat.requests[-1][1]["participant"]["on_stage"] is True
        await host.ok("chat.disable", disabled=True)
        subject, body = chat.requests[-1]
        assert subject == "svc.chat.chat.disable" and body["participant"]["role"] == "host"
        assert body["args"] == {"disabled": True}
    finally:
        await sub.unsubscribe()


async def test_no_chat_service_is_unavailable(stack: Stack):
    room = await stack.webinar()
    attendee = await room.join("attendee")
    reply = await attendee.error("chat.send", "unavailable", text="anyone?", to="everyone")
    assert "chat" in reply["message"]
    await attendee.ok("ping")
    host = await room.join("host", replica=1)
    await host.error("restream.start", "unavailable", url="rtmp://127.0.0.1/live/key")
    await host.error("recording.start", "unavailable")


async def test_chat_events_reach_only_their_audience(stack: Stack):
    room = await stack.webinar()
    host = await room.started(replica=0)
    panelist = await room.join("panelist", replica=1, pid="p_a")
    attendee = await room.join("attendee", replica=1, pid="a_a")
    other = await room.join("attendee", replica=0, pid="a_b")

    async def emit(data: dict) -> None:
        event = make_event("chat.message", room.id, data, "/tests/chat")
        await stack.nc.publish(f"webinar.{room.id}.chat.message",
                               event.model_dump_json().encode())  # fmt: skip

    await emit({"message_id": "1", "text": "backstage", "audience": "panelists"})
    await emit({"message_id": "2", "text": "psst", "audience": "private",
                "recipients": ["a_b", "p_a"]})  # fmt: skip
    await emit({"message_id": "3", "text": "hello all"})
    for client in (host, panelist, attendee, other):
        await client.event("chat.message", message_id="3")
    assert (await panelist.event("chat.message", message_id="1"))["text"] == "backstage"
    await host.event("chat.message", message_id="1")
    await panelist.event("chat.message", message_id="2")
    await other.event("chat.message", message_id="2")
    assert [m["message_id"] for m in attendee.events("chat.message")] == ["3"]
    assert [m["message_id"] for m in other.events("chat.message")] == ["2", "3"]
    assert [m["message_id"] for m in host.events("chat.message")] == ["1", "3"]
