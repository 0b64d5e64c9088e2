"""Audio and video as viewers see them, through the signaling WebSocket: real aiortc
peers that decode, two signaling replicas, two real media nodes on real NATS and Redis.

Every webinar here gets its origin on `media.nodes[0]` (it sorts first and both nodes
start empty); the first subscriber lands there too, the next one on the other node
(least loaded), which then relays the origin's tracks over NATS as an edge.
"""

import asyncio
import time
from typing import Any

from services.media.forwarding.rtp import is_rtcp
from tests.e2e.media.conftest import (
    AUDIO_MIDS,
    NODE_TIMEOUT,
    VIDEO_MIDS,
    MediaStack,
    frames_in,
)
from tests.media.peers import Viewer
from tests.signaling.conftest import OFFER, Client


def is_renegotiate(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "renegotiate"


async def slots_now(client: Client, since: int = 0, **expected: object) -> dict[str, Any]:
    """The first `slots.changed` event, through the WebSocket, whose slot map has
    `expected`, among the frames the client got from frame number `since` on."""
    deadline = time.monotonic() + 10
    while True:
        for frame in client.frames[since:]:
            if frame.get("type") == "event" and frame.get("event") == "slots.changed":
                slots: dict[str, Any] = frame["data"]["slots"]
                if all(slots.get(mid) == value for mid, value in expected.items()):
                    return slots
        assert time.monotonic() < deadline, f"no slots.changed with {expected}: {client.frames}"
        await asyncio.sleep(0.05)


async def test_panelist_reaches_attendees_on_two_media_nodes(media: MediaStack):
    room = await media.room()
    host = await room.started(replica=0)
    panelist = await room.join("panelist", replica=1, pid="p_pia", name="Pia")
    alice = await room.join("attendee", replica=0, pid="a_alice")
    bob = await room.join("attendee", replica=1, pid="a_bob")
    assert alice.welcome["slots"] == {"audio": 2, "video": 2, "screen": 1}

    origin, edge = media.nodes
    _, published = await media.publish(panelist)
    assert published["node_id"] == origin.node_id
    await media.settled()
    alice_sees, placed = await media.subscribe(alice)
    assert placed["node_id"] == origin.node_id and placed["origin_node"] == origin.node_id
    await media.settled()  # signaling now knows the origin carries a viewer
    bob_sees, placed = await media.subscribe(bob)
    assert placed["node_id"] == edge.node_id and placed["origin_node"] == origin.node_id
    assert origin.subscribers(room.id) == {"a_alice"}
    assert edge.subscribers(room.id) == {"a_bob"}

    # Both decode Pia's camera and her voice, in the first video and audio slots.
    for viewer in (alice_sees, bob_sees):
        await frames_in(viewer, VIDEO_MIDS[0], 15, within=15)
        await frames_in(viewer, AUDIO_MIDS[0], 50, within=15)
        assert viewer.frames.get(VIDEO_MIDS[1], 0) == 0  # nobody else is on stage
    # The slot map reaches every client through the WebSocket, by mid.
    pia = {
        VIDEO_MIDS[0]: {"participant_id": "p_pia", "kind": "video"},
        AUDIO_MIDS[0]: {"participant_id": "p_pia", "kind": "audio"},
    }
    for client in (alice, bob, host):
        slots = await slots_now(client, **pia)
        assert slots[VIDEO_MIDS[1]] is None and slots[AUDIO_MIDS[1]] is None
    # Media keeps flowing to both.
    a0, b0 = alice_sees.count("video"), bob_sees.count("video")
    await asyncio.sleep(1.0)
    assert alice_sees.count("video") - a0 >= 10 and bob_sees.count("video") - b0 >= 10


async def test_late_subscriber_decodes_within_a_second_and_a_half(media: MediaStack):
    room = await media.room()
    host = await room.started(replica=0)
    _, _ = await media.publish(host)
    await media.settled()
    early = await room.join("attendee", replica=0)
    early_sees, _ = await media.subscribe(early)
    await frames_in(early_sees, VIDEO_MIDS[0], 5, within=15)
    await asyncio.sleep(1.5)  # the encoder is well past its first keyframe
    await media.settled()
    for replica, node in ((1, media.nodes[1]), (0, media.nodes[0])):
        late = await room.join("attendee", replica=replica)
        late_sees, placed = await media.subscribe(late)
        assert placed["node_id"] == node.node_id  # one late viewer on the edge, one on origin
        await frames_in(late_sees, VIDEO_MIDS[0], 1, within=5)
        assert late_sees.first_video is not None
        waited = late_sees.first_video - late_sees.answered
        assert waited < 1.5, f"first frame {waited:.2f}s after the answer on {node.node_id}"
        await media.settled()


async def test_promoted_attendee_fills_a_slot_without_renegotiation(media: MediaStack):
    room = await media.room()
    host = await room.started(replica=0)
    await media.publish(host)
    await media.settled()
    viewers: list[tuple[Client, Viewer]] = []
    for replica in (0, 1):  # one viewer on the origin, one on the edge
        client = await room.join("attendee", replica=replica)
        sees, _ = await media.subscribe(client)
        viewers.append((client, sees))
        await media.settled()
    assert {len(n.subscribers(room.id)) for n in media.nodes} == {1}
    for _, sees in viewers:
        await frames_in(sees, VIDEO_MIDS[0], 5, within=15)
        assert sees.frames.get(VIDEO_MIDS[1], 0) == 0

    # Carol raises her hand, the host promotes her, she publishes.
    carol = await room.join("attendee", replica=1, pid="a_carol", name="Carol")
    await carol.error("publish", "forbidden", sdp=OFFER)  # not on stage yet
    await carol.ok("hand.raise")
    await host.ok("participant.promote", participant_id="a_carol")
    await carol.wait(lambda f: f.get("type") == "notice" and f["notice"] == "promoted",
                     what="promoted notice")  # fmt: skip
    _, published = await media.publish(carol)
    assert published["node_id"] == media.nodes[0].node_id  # the webinar's origin

    carol_slots = {
        VIDEO_MIDS[1]: {"participant_id": "a_carol", "kind": "video"},
        AUDIO_MIDS[1]: {"participant_id": "a_carol", "kind": "audio"},
    }
    for client, sees in viewers:
        slots = await slots_now(client, **carol_slots)
        assert slots[VIDEO_MIDS[0]]["participant_id"] == room.created["host"]["participant_id"]
        # Her camera and voice decode in the second slots of the SDP negotiated before.
        sdp = sees.pc.remoteDescription.sdp
        await frames_in(sees, VIDEO_MIDS[1], 10, within=10)
        await frames_in(sees, AUDIO_MIDS[1], 25, within=10)
        assert sees.pc.remoteDescription.sdp == sdp and sees.pc.signalingState == "stable"
        assert not [f for f in client.frames if is_renegotiate(f)]
    await slots_now(host, **carol_slots)


async def test_host_mutes_panelist_video_and_she_unmutes_it(media: MediaStack):
    room = await media.room()
    host = await room.started(replica=0)
    panelist = await room.join("panelist", replica=1, pid="p_pia", name="Pia")
    await media.publish(panelist)
    await media.settled()
    viewers = []
    for replica in (0, 1):  # on the origin and on the edge
        client = await room.join("attendee", replica=replica)
        sees, _ = await media.subscribe(client)
        viewers.append(sees)
        await media.settled()
    for sees in viewers:
        await frames_in(sees, VIDEO_MIDS[0], 10, within=15)

    muted = await host.ok("participant.mute", participant_id="p_pia", kind="video")
    assert muted["muted"] is True and muted["enforced"] is True
    notice = await panelist.wait(lambda f: f.get("type") == "notice" and f["notice"] == "muted",
                                 what="muted notice")  # fmt: skip
    assert notice["data"]["kind"] == "video" and notice["data"]["muted"] is True
    await panelist.event("participant.muted", participant_id="p_pia", kind="video", muted=True)
    await asyncio.sleep(0.5)  # what was in flight
    before = [(s.count("video"), s.count("audio")) for s in viewers]
    await asyncio.sleep(2.0)
    for sees, (video, audio) in zip(viewers, before, strict=True):
        assert sees.count("video") - video <= 1, "video still arrives while muted"
        assert sees.count("audio") - audio >= 40, "audio stopped with the video"
    # Only she may unmute herself; then everyone sees her again.
    await host.error("participant.mute", "forbidden", participant_id="p_pia", kind="video",
                     muted=False)  # fmt: skip
    shown = [sees.frames[VIDEO_MIDS[0]] for sees in viewers]
    unmuted = await panelist.ok("participant.mute", participant_id="p_pia", kind="video",
                                muted=False)  # fmt: skip
    assert unmuted["muted"] is False
    for sees, video in zip(viewers, shown, strict=True):  # the edge's viewer too
        await frames_in(sees, VIDEO_MIDS[0], video + 15, within=5)


async def test_media_node_down_moves_its_viewers_to_the_other_node(media: MediaStack):
    room = await media.room()
    host = await room.started(replica=0)
    panelist = await room.join("panelist", replica=1, pid="p_pia", name="Pia")
    await media.publish(panelist)
    await media.settled()
    origin, edge = media.nodes
    stays = await room.join("attendee", replica=0, pid="a_stay")
    stays_sees, placed = await media.subscribe(stays)
    assert placed["node_id"] == origin.node_id
    await media.settled()
    moves = await room.join("attendee", replica=1, pid="a_move")
    moves_sees, placed = await media.subscribe(moves)
    assert placed["node_id"] == edge.node_id
    await frames_in(moves_sees, VIDEO_MIDS[0], 10, within=15)
    await frames_in(stays_sees, VIDEO_MIDS[0], 10, within=15)

    killed = time.monotonic()
    await edge.stop()
    frame = await moves.wait(is_renegotiate, within=NODE_TIMEOUT + 3, what="renegotiate")
    noticed = time.monotonic() - killed
    assert noticed < NODE_TIMEOUT + 2, noticed
    assert frame["node_id"] == edge.node_id
    assert frame["subscribe"] is True and frame["publish"] is False
    down = await moves.event("media.node.down", node_id=edge.node_id)
    assert down["origin"] is False
    # Its viewer subscribes again and lands on the node still up; the others never stop.
    await moves_sees.close()
    again_sees, placed = await media.subscribe(moves)
    assert placed["node_id"] == origin.node_id
    await frames_in(again_sees, VIDEO_MIDS[0], 10, within=10)
    await frames_in(again_sees, AUDIO_MIDS[0], 25, within=10)
    assert origin.subscribers(room.id) == {"a_stay", "a_move"}
    seen = stays_sees.count("video")
    await frames_in(stays_sees, VIDEO_MIDS[0], seen + 10, within=5)
    for client in (stays, panelist, host):
        assert not [f for f in client.frames if is_renegotiate(f)], client.frames


async def test_five_percent_loss_on_an_edge_viewer_leg_is_recovered_by_nacks(media: MediaStack):
    room = await media.room()
    host = await room.started(replica=0)
    await media.publish(host)
    await media.settled()
    clean = await room.join("attendee", replica=0, pid="a_clean")
    clean_sees, placed = await media.subscribe(clean)
    assert placed["node_id"] == media.nodes[0].node_id
    await media.settled()
    lossy = await room.join("attendee", replica=1, pid="a_lossy")
    lossy_sees, placed = await media.subscribe(lossy)
    edge = media.nodes[1]
    assert placed["node_id"] == edge.node_id  # answers NACKs from the edge's own history
    await frames_in(clean_sees, VIDEO_MIDS[0], 5, within=15)
    await frames_in(lossy_sees, VIDEO_MIDS[0], 5, within=15)

    # The network drops every 20th RTP packet on the way to the lossy viewer.
    assert edge.service is not None
    leg = edge.service.node.rooms[room.id].subscribers["a_lossy"].legs[2]
    assert leg is not None and leg.send_now is not None
    send_now, seen, dropped = leg.send_now, [0], [0]

    def lossy_send(data: bytes) -> None:
        if not is_rtcp(data):
            seen[0] += 1
            if seen[0] % 20 == 7:
                dropped[0] += 1
                return
        send_now(data)

    leg.send_now = lossy_send
    c0, l0 = clean_sees.count("video"), lossy_sees.count("video")
    await asyncio.sleep(4)
    clean_frames, lossy_frames = clean_sees.count("video") - c0, lossy_sees.count("video") - l0
    assert dropped[0] >= 5, dropped
    assert leg.retransmitted > 0
    # aiortc's jitter buffer waits for every lost packet: only NACKs keep it decoding.
    assert clean_frames >= 40 and lossy_frames >= 0.85 * clean_frames, (lossy_frames, clean_frames)


async def test_origin_node_down_moves_the_speaker_and_viewers_to_the_other_node(
    media: MediaStack,
):
    room = await media.room()
    host = await room.started(replica=0)
    panelist = await room.join("panelist", replica=1, pid="p_pia", name="Pia")
    old_pub, _ = await media.publish(panelist)
    await media.settled()
    origin, edge = media.nodes
    near = await room.join("attendee", replica=0, pid="a_near")
    near_sees, placed = await media.subscribe(near)
    assert placed["node_id"] == origin.node_id
    await media.settled()
    far = await room.join("attendee", replica=1, pid="a_far")
    far_sees, placed = await media.subscribe(far)
    assert placed["node_id"] == edge.node_id
    for sees in (near_sees, far_sees):
        await frames_in(sees, VIDEO_MIDS[0], 10, within=15)

    await origin.stop()
    frame = await panelist.wait(is_renegotiate, within=NODE_TIMEOUT + 3, what="renegotiate")
    assert frame["publish"] is True and frame["node_id"] == origin.node_id
    for client in (near, far):  # the edge's viewer too: its tracks came from the origin
        frame = await client.wait(is_renegotiate, within=2, what="renegotiate")
        assert frame["subscribe"] is True and frame["publish"] is False
    for client in (near, host):
        down = await client.event("media.node.down", node_id=origin.node_id)
        assert down["origin"] is True
    assert not [f for f in host.frames if is_renegotiate(f)]  # it has no media
    since = len(far.frames)
    # The speaker publishes again while the edge's viewer still holds its old
    # connection there (a client replaces it only once the new one is up): the edge
    # becomes the origin.
    await old_pub.pc.close()
    _, published = await media.publish(panelist)
    assert published["node_id"] == edge.node_id
    for client, old in ((near, near_sees), (far, far_sees)):
        sees, placed = await media.subscribe(client)
        await old.close()
        assert placed["node_id"] == placed["origin_node"] == edge.node_id
        await frames_in(sees, VIDEO_MIDS[0], 10, within=10)
        await frames_in(sees, AUDIO_MIDS[0], 25, within=10)
    assert edge.subscribers(room.id) == {"a_near", "a_far"}
    # The new origin announces its own slot map.
    await slots_now(far, since, **{VIDEO_MIDS[0]: {"participant_id": "p_pia", "kind": "video"}})


async def test_one_trace_follows_a_publish_from_the_websocket_to_the_media_node(
    media: MediaStack,
):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)  # installed by the services' setup_tracing
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    room = await media.room()
    host = await room.started(replica=0)
    await media.publish(host)
    finished = {s.name: s for s in spans.get_finished_spans()}
    spans.shutdown()
    ws, node = finished["ws publish"], finished["media publish"]
    assert node.context.trace_id == ws.context.trace_id
    assert node.parent is not None and node.kind == trace.SpanKind.SERVER
