"""A media node through its NATS API, with real aiortc peers that decode what they get."""

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from nats.aio.client import Client as NATS

from services.media.forwarding.rtp import is_rtcp
from services.media.service import media_node
from services.media.settings import MediaSettings
from tests.infra import free_port
from tests.media.conftest import SLOTS
from tests.media.peers import call, closing, publish, subscribe


async def test_subscribers_decode_audio_and_video_and_get_the_slot_map(
    media_settings: Callable[..., MediaSettings], nc: NATS, webinar_id: str
) -> None:
    events: list[dict[str, object]] = []

    async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
        events.append(json.loads(msg.data))

    await nc.subscribe(f"webinar.{webinar_id}.slots.changed", cb=on_event)
    async with media_node(media_settings()) as service:
        node_id = service.node.node_id
        pub = await publish(nc, node_id, webinar_id, "alice")
        viewers = [await subscribe(nc, node_id, webinar_id, f"v{i}", SLOTS) for i in range(2)]
        async with closing(pub, *viewers):
            for viewer in viewers:
                await viewer.wait_for("video", 15)
                await viewer.wait_for("audio", 25)
            # alice's audio in the first audio slot, her camera in the first video slot
            assert viewers[0].frames.get("0", 0) > 0 and viewers[0].frames.get("2", 0) > 0
            for _ in range(50):
                if events:
                    break
                await asyncio.sleep(0.1)
            slots = events[-1]["data"]["slots"]  # type: ignore[index]
            assert events[-1]["type"] == "io.webinar.slots.changed.v1"
            assert slots["0"] == {"participant_id": "alice", "kind": "audio"}
            assert slots["2"] == {"participant_id": "alice", "kind": "video"}
            assert slots["1"] is None and slots["4"] is None
            reply = await call(nc, node_id, "slots", webinar_id=webinar_id)
            assert reply["slots"] == slots
            # RTCP: viewers get sender reports carrying the publisher's clock; the
            # publisher gets receiver reports from the SFU
            viewer_sr = publisher_rr = None
            for _ in range(40):
                viewer_stats = await viewers[0].pc.getStats()
                viewer_sr = next((st for st in viewer_stats.values()
                                  if st.type == "remote-outbound-rtp" and st.kind == "video"
                                  and st.packetsSent > 0), None)  # fmt: skip
                pub_stats = await pub.pc.getStats()
                publisher_rr = next((st for st in pub_stats.values()
                                     if st.type == "remote-inbound-rtp"
                                     and st.kind == "video"), None)  # fmt: skip
                if viewer_sr and publisher_rr:
                    break
                await asyncio.sleep(0.1)
            assert viewer_sr is not None and publisher_rr is not None
            now = datetime.now(UTC).timestamp()
            assert abs(viewer_sr.remoteTimestamp.timestamp() - now) < 5  # NTP, not zero
            assert publisher_rr.packetsLost == 0


async def test_late_subscriber_decodes_within_a_second(
    media_settings: Callable[..., MediaSettings], nc: NATS, webinar_id: str
) -> None:
    async with media_node(media_settings()) as service:
        node_id = service.node.node_id
        pub = await publish(nc, node_id, webinar_id, "alice")
        first = await subscribe(nc, node_id, webinar_id, "early", SLOTS)
        async with closing(pub, first):
            await first.wait_for("video", 10)
            await asyncio.sleep(1.5)  # the encoder is well past its first keyframe
            late = await subscribe(nc, node_id, webinar_id, "late", SLOTS)
            async with closing(late):
                await late.wait_for("video", 1, within=5)
                assert late.first_video is not None
                assert late.first_video - late.answered < 1.5, late.first_video - late.answered


async def test_muted_track_stops_and_resumes_on_unmute(
    media_settings: Callable[..., MediaSettings], nc: NATS, webinar_id: str
) -> None:
    async with media_node(media_settings()) as service:
        node_id = service.node.node_id
        pub = await publish(nc, node_id, webinar_id, "alice")
        viewer = await subscribe(nc, node_id, webinar_id, "v", SLOTS)
        async with closing(pub, viewer):
            await viewer.wait_for("video", 10)
            reply = await call(nc, node_id, "mute", webinar_id=webinar_id,
                               participant_id="alice", kind="video", muted=True)  # fmt: skip
            assert reply == {"ok": True, "muted": True}
            await asyncio.sleep(0.5)
            video, audio = viewer.count("video"), viewer.count("audio")
            await asyncio.sleep(1.0)
            assert viewer.count("video") - video <= 1  # nothing new arrives
            assert viewer.count("audio") - audio > 20  # audio still flows
            reply = await call(nc, node_id, "mute", webinar_id=webinar_id,
                               participant_id="alice", kind="video", muted=False)  # fmt: skip
            assert reply["ok"]
            await viewer.wait_for("video", viewer.count("video") + 10, within=5)


async def test_subscriber_on_edge_node_decodes_track_from_origin(
    media_settings: Callable[..., MediaSettings], nc: NATS, webinar_id: str
) -> None:
    async with media_node(media_settings()) as origin, media_node(media_settings()) as edge:
        origin_id, edge_id = origin.node.node_id, edge.node.node_id
        pub = await publish(nc, origin_id, webinar_id, "alice")
        await asyncio.sleep(0.5)
        viewer = await subscribe(nc, edge_id, webinar_id, "far", SLOTS, origin_node=origin_id)
        async with closing(pub, viewer):
            await viewer.wait_for("video", 15)
            await viewer.wait_for("audio", 25)
            assert edge.node.rooms[webinar_id].is_edge
            assert not origin.node.rooms[webinar_id].subscribers  # all through the edge
            # a speaker promoted on the origin reaches the edge's viewer in the next slot
            bob = await publish(nc, origin_id, webinar_id, "bob")
            async with closing(bob):
                for _ in range(100):
                    if viewer.frames.get("3", 0) >= 5:
                        break
                    await asyncio.sleep(0.1)
                assert viewer.frames.get("3", 0) >= 5, viewer.frames
            edge_source = edge.node.rooms[webinar_id].sources["alice_video"]
            assert edge_source.history.get(edge_source._max_seq) is not None  # own history


async def test_five_percent_loss_on_a_leg_is_recovered_by_nacks(
    media_settings: Callable[..., MediaSettings], nc: NATS, webinar_id: str
) -> None:
    async with media_node(media_settings()) as service:
        node_id = service.node.node_id
        pub = await publish(nc, node_id, webinar_id, "alice")
        clean = await subscribe(nc, node_id, webinar_id, "clean", SLOTS)
        lossy = await subscribe(nc, node_id, webinar_id, "lossy", SLOTS)
        async with closing(pub, clean, lossy):
            await lossy.wait_for("video", 5)
            room = service.node.rooms[webinar_id]
            leg = room.subscribers["lossy"].legs[2]
            assert leg is not None
            send_now, seen, dropped = leg.send_now, [0], [0]
            assert send_now is not None

            def lossy_send(data: bytes) -> None:  # 5% loss: every 20th RTP packet
                if not is_rtcp(data):
                    seen[0] += 1
                    if seen[0] % 20 == 7:
                        dropped[0] += 1
                        return
                send_now(data)

            leg.send_now = lossy_send
            c0, l0 = clean.count("video"), lossy.count("video")
            await asyncio.sleep(4)
            clean_frames, lossy_frames = clean.count("video") - c0, lossy.count("video") - l0
            assert dropped[0] >= 2 and dropped[0] == seen[0] // 20 + (seen[0] % 20 >= 7)
            assert leg.retransmitted > 0
            assert lossy_frames >= 0.85 * clean_frames, (lossy_frames, clean_frames)


async def test_api_rejects_bad_requests_and_sends_heartbeats(
    media_settings: Callable[..., MediaSettings], nc: NATS, webinar_id: str
) -> None:
    beats: list[dict[str, object]] = []

    async def on_beat(msg) -> None:  # type: ignore[no-untyped-def]
        beats.append(json.loads(msg.data))

    await nc.subscribe("svc.media.heartbeat", cb=on_beat)
    port = free_port()
    async with media_node(media_settings(media_capacity=7, media_http_port=port)) as service:
        node_id = service.node.node_id
        broken = await call(nc, node_id, "publish", webinar_id=webinar_id,
                            participant_id="a", sdp="v=0\r\nthis is not sdp")  # fmt: skip
        assert broken["ok"] is False and broken["code"] == "invalid"
        missing = await call(nc, node_id, "subscribe", webinar_id=webinar_id, participant_id="a")
        assert missing["code"] == "invalid"
        bad_kind = await call(nc, node_id, "mute", webinar_id=webinar_id,
                              participant_id="a", kind="smell", muted=True)  # fmt: skip
        assert bad_kind["code"] == "invalid"
        nobody = await call(nc, node_id, "mute", webinar_id=webinar_id,
                            participant_id="a", kind="audio", muted=True)  # fmt: skip
        assert nobody["code"] == "not_found"
        raw = await nc.request(f"svc.media.{node_id}.leave", b"not json", timeout=5)
        assert json.loads(raw.data)["code"] == "invalid"
        assert (await call(nc, node_id, "leave", webinar_id=webinar_id, participant_id="a"))["ok"]
        deadline = time.monotonic() + 3
        while not any(b.get("node_id") == node_id for b in beats):
            assert time.monotonic() < deadline, beats
            await asyncio.sleep(0.1)
        beat = next(b for b in beats if b.get("node_id") == node_id)
        assert beat["capacity"] == 7 and beat["draining"] is False
        assert beat["subscribers"] == 0 and beat["publishers"] == 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(50):
                try:
                    health = await http.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert health.status_code == 200 and health.json()["ok"] is True
            metrics = (await http.get("/metrics")).text
            assert "webinar_media_subscribers" in metrics


async def test_h264_is_forwarded_to_a_viewer_with_matching_fmtp(
    media_settings: Callable[..., MediaSettings], nc: NATS, webinar_id: str
) -> None:
    async with media_node(media_settings()) as service:
        node_id = service.node.node_id
        pub = await publish(nc, node_id, webinar_id, "alice", codec="H264")
        viewer = await subscribe(nc, node_id, webinar_id, "v", SLOTS)
        async with closing(pub, viewer):
            await viewer.wait_for("video", 10)
            source = service.node.rooms[webinar_id].sources["alice_video"]
            assert {c.name for c in source.codecs.values()} >= {"H264"}


async def test_promoted_speaker_and_screen_fill_slots_without_renegotiation(
    media_settings: Callable[..., MediaSettings], nc: NATS, webinar_id: str
) -> None:
    async with media_node(media_settings()) as service:
        node_id = service.node.node_id
        alice = await publish(nc, node_id, webinar_id, "alice")
        viewer = await subscribe(nc, node_id, webinar_id, "v", SLOTS)
        async with closing(alice, viewer):
            await viewer.wait_for("video", 5)
            assert viewer.frames.get("3", 0) == 0 and viewer.frames.get("4", 0) == 0
            # an attendee is promoted and publishes camera + screen: same subscriber SDP
            bob = await publish(nc, node_id, webinar_id, "bob", screen=True)
            async with closing(bob):
                for _ in range(100):
                    if viewer.frames.get("3", 0) >= 5 and viewer.frames.get("4", 0) >= 5:
                        break
                    await asyncio.sleep(0.1)
                assert viewer.frames.get("3", 0) >= 5, viewer.frames  # bob's camera
                assert viewer.frames.get("4", 0) >= 5, viewer.frames  # bob's screen
                assert viewer.frames.get("1", 0) > 0  # bob's audio, second audio slot
                slots = (await call(nc, node_id, "slots", webinar_id=webinar_id))["slots"]
                assert slots["3"] == {"participant_id": "bob", "kind": "video"}
                assert slots["4"] == {"participant_id": "bob", "kind": "screen"}
                # alice is demoted: her slot empties, bob keeps his
                assert (await call(nc, node_id, "unpublish", webinar_id=webinar_id,
                                   participant_id="alice"))["ok"]  # fmt: skip
                slots = (await call(nc, node_id, "slots", webinar_id=webinar_id))["slots"]
                assert slots["2"] is None and slots["3"]["participant_id"] == "bob"
                bob_frames = viewer.frames["3"]
                await viewer.wait_for("video", viewer.count("video") + 5)
                assert viewer.frames["3"] > bob_frames
