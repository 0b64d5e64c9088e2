"""publish/subscribe: SDP checks, placement on media nodes, and nodes going down."""

import asyncio
import uuid

from tests.signaling.conftest import OFFER, Stack


async def test_no_media_node_is_unavailable(stack: Stack):
    room = await stack.webinar()
    host = await room.started()
    reply = await host.error("publish", "unavailable", sdp=OFFER)
    assert "media node" in reply["message"]
    await host.error("subscribe", "unavailable", sdp=OFFER)
    await host.ok("ping")


async def test_sdp_that_does_not_parse_is_invalid(stack: Stack):
    node = await stack.media_node("n1")
    room = await stack.webinar()
    host = await room.started()
    for bad in [
        "",
        "hello",
        "v=0\r\ns=-\r\n",
        "o=- 1\r\nm=audio 9 RTP 0\r\n",
        "v=0\r\nm=x\r\nnonsense\r\n",
    ]:
        reply = await host.error("publish", "invalid", sdp=bad)
        assert "sdp" in reply["message"]
    await host.error("subscribe", "invalid", sdp={"not": "a string"})
    await host.error("publish", "invalid")
    reply = await host.error("publish", "invalid", sdp=OFFER + "a=x:" + "y" * 50_000 + "\r\n")
    assert "larger" in reply["message"]
    assert node.calls == []


async def test_publishers_go_to_the_origin_and_subscribers_to_the_least_loaded(stack: Stack):
    n1 = await stack.media_node("n1", subscribers=10)
    room = await stack.webinar()
    host = await room.started(replica=0)
    assert (await host.ok("publish", sdp=OFFER))["node_id"] == "n1"
    assert await stack.redis.hget(f"sig:{room.id}:state", "origin") == "n1"
    n2 = await stack.media_node("n2", subscribers=0)
    await stack.media_node("n3", subscribers=100, capacity=100)  # full
    panelist = await room.join("panelist", replica=1, pid="p_2")
    assert (await panelist.ok("publish", sdp=OFFER))["node_id"] == "n1"
    assert n1.ops("publish", participant_id="p_2") and not n2.ops("publish")
    attendee = await room.join("attendee", replica=1, pid="a_view")
    reply = await attendee.ok("subscribe", sdp=OFFER)
    assert reply["node_id"] == "n2" and reply["origin_node"] == "n1"
    assert "answer-from-n2" in reply["sdp"]
    sub = n2.ops("subscribe", participant_id="a_view")[0]
    assert sub == {"webinar_id": room.id, "participant_id": "a_view", "sdp": OFFER,
                   "origin_node": "n1"}  # fmt: skip


async def test_media_node_down_moves_its_clients(stack: Stack):
    n1 = await stack.media_node("n1", subscribers=60)
    room = await stack.webinar()
    host = await room.started(replica=0)
    await host.ok("publish", sdp=OFFER)
    n2 = await stack.media_node("n2")
    await stack.media_node("n3", subscribers=50)
    attendee = await room.join("attendee", replica=1)
    assert (await attendee.ok("subscribe", sdp=OFFER))["node_id"] == "n2"
    await n1.stop()  # the origin stops sending heartbeats
    moved = await host.wait(lambda f: f.get("type") == "renegotiate", what="renegotiate")
    assert moved["node_id"] == "n1" and moved["publish"] is True and moved["subscribe"] is False
    moved = await attendee.wait(lambda f: f.get("type") == "renegotiate", what="renegotiate")
    assert moved["node_id"] == "n1" and moved["subscribe"] is True
    down = await room.events.wait("media.node.down", node_id="n1")
    assert down["origin"] is True
    await host.event("media.node.down", node_id="n1")
    reply = await host.ok("publish", sdp=OFFER)
    assert reply["node_id"] in ("n2", "n3")
    assert await stack.redis.hget(f"sig:{room.id}:state", "origin") == reply["node_id"]
    await n2.stop()
    await room.events.wait("media.node.down", node_id="n2")


async def test_a_media_node_that_starts_is_announced_once_to_live_webinars(stack: Stack):
    room = await stack.webinar()
    await room.started(replica=0)
    node_id = f"fresh-{uuid.uuid4().hex[:8]}"
    await stack.media_node(node_id)
    up = await room.events.wait("media.node.up", node_id=node_id)
    assert up == {"node_id": node_id}
    await asyncio.sleep(0.8)  # both replicas have seen its heartbeats by now
    assert len(room.events.of("media.node.up", node_id=node_id)) == 1
