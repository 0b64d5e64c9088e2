"""The restream service against real parts: an aiortc publisher -> a media node -> the
service's hidden subscriber (decode, compose, encode) -> nginx RTMP / an MP4 file ->
PyAV reading it back."""

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from nats.aio.client import Client as NATS

from services.media.service import MediaService
from services.restream.main import RestreamService
from services.restream.service import outputs_key
from tests.infra import free_port
from tests.media.peers import Publisher, publish
from tests.restream.conftest import HEIGHT, WIDTH, Events, Rtmp, command

ATTENDEE = {"id": "p-att", "name": "Att", "role": "attendee", "on_stage": False}


@dataclass
class Decoded:
    video: int = 0
    audio: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    # Distinct luma values along the middle row of the busiest frame: the publisher's
    # moving gradient gives many, a black or empty stage one or two.
    luma_levels: int = 0


def decode(source: str, video: int, audio: int, within: float) -> Decoded:
    """Open `source` (an rtmp:// URL or a file) with PyAV and decode until `video` video
    and `audio` audio frames (or the end, or the deadline)."""
    seen = Decoded()
    deadline = time.monotonic() + within
    with av.open(source, timeout=(10.0, 5.0)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                seen.video += 1
                seen.sizes.add((frame.width, frame.height))
                plane = frame.planes[0]
                row = bytes(plane)[plane.line_size * (frame.height // 2) :][: frame.width]
                seen.luma_levels = max(seen.luma_levels, len(set(row)))
            elif isinstance(frame, av.AudioFrame):
                seen.audio += 1
            if (seen.video >= video and seen.audio >= audio) or time.monotonic() > deadline:
                break
    return seen


async def on_stage(nc: NATS, node: MediaService, webinar_id: str) -> Publisher:
    """A speaker publishing audio and camera on the node, the webinar's origin (the
    Redis field signaling keeps it in)."""
    publisher = await publish(nc, node.settings.media_node_id, webinar_id, "p-speaker")
    return publisher


async def set_origin(restream: RestreamService, webinar_id: str, node_id: str) -> None:
    await restream.redis.hset(f"sig:{webinar_id}:state", "origin", node_id)


async def test_restream_to_rtmp_decodes_back(
    nc: NATS,
    node: MediaService,
    restream: RestreamService,
    rtmp_server: Rtmp,
    events: Events,
    webinar_id: str,
) -> None:
    await set_origin(restream, webinar_id, node.settings.media_node_id)
    publisher = await on_stage(nc, node, webinar_id)
    try:
        url = rtmp_server.url("test")
        reply = await command(nc, "restream.start", webinar_id, url=url)
        assert reply["ok"], reply
        restream_id = reply["restream_id"]
        started = await events.wait("restream.started")
        assert started["restream_id"] == restream_id
        assert started["destination"] == f"rtmp://127.0.0.1:{rtmp_server.port}/live/***"
        assert "test" not in started["destination"]  # the stream key never leaves
        assert await restream.redis.hexists(outputs_key(webinar_id), restream_id)

        seen = await asyncio.to_thread(decode, url, 30, 30, 25.0)
        assert seen.video >= 30 and seen.audio >= 30, seen
        assert seen.sizes == {(WIDTH, HEIGHT)}
        assert seen.luma_levels > 40, f"the speaker's camera is not in the picture: {seen}"

        # A second destination at once, then the stop (as from any replica).
        second = await command(nc, "restream.start", webinar_id, url=rtmp_server.url("two"))
        assert second["ok"], second
        assert (await command(nc, "restream.stop", webinar_id, restream_id=restream_id))["ok"]
        stopped = await events.wait("restream.stopped")
        assert stopped["restream_id"] == restream_id
        again = await asyncio.to_thread(decode, rtmp_server.url("two"), 5, 5, 15.0)
        assert again.video >= 5, again
        stop_two = await command(nc, "restream.stop", webinar_id, restream_id=second["restream_id"])
        assert stop_two["ok"], stop_two
        assert not await restream.redis.hlen(outputs_key(webinar_id))
        assert not events.of("restream.failed")
        assert not restream.restreamer.stages, "the hidden subscriber left with the last output"
    finally:
        await publisher.pc.close()


async def test_unreachable_destination_fails_and_service_stays(
    nc: NATS,
    node: MediaService,
    restream: RestreamService,
    events: Events,
    webinar_id: str,
) -> None:
    await set_origin(restream, webinar_id, node.settings.media_node_id)
    closed = free_port()  # nothing listens there
    reply = await command(
        nc, "restream.start", webinar_id, url=f"rtmp://127.0.0.1:{closed}/live/key"
    )
    assert reply["ok"], reply
    failed = await events.wait("restream.failed")
    assert failed["restream_id"] == reply["restream_id"]
    assert "refused" in failed["reason"].lower(), failed
    assert not events.of("restream.started")
    for _ in range(50):
        if not await restream.redis.hlen(outputs_key(webinar_id)):
            break
        await asyncio.sleep(0.05)
    assert not await restream.redis.hlen(outputs_key(webinar_id))
    # Still serving: the output is gone and new commands are answered.
    gone = await command(nc, "restream.stop", webinar_id, restream_id=reply["restream_id"])
    assert gone["ok"] is False and gone["code"] == "not_found", gone
    recording = await command(nc, "recording.start", webinar_id)
    assert recording["ok"], recording
    stopped = await command(
        nc, "recording.stop", webinar_id, recording_id=recording["recording_id"]
    )
    assert stopped["ok"], stopped


async def test_recording_writes_a_playable_mp4(
    nc: NATS,
    node: MediaService,
    restream: RestreamService,
    events: Events,
    webinar_id: str,
) -> None:
    await set_origin(restream, webinar_id, node.settings.media_node_id)
    publisher = await on_stage(nc, node, webinar_id)
    try:
        reply = await command(nc, "recording.start", webinar_id)
        assert reply["ok"], reply
        recording_id = reply["recording_id"]
        assert (await events.wait("recording.started"))["recording_id"] == recording_id
        again = await command(nc, "recording.start", webinar_id)
        assert again["ok"] is False and again["code"] == "conflict", again
        await asyncio.sleep(3.5)
        stop = await command(nc, "recording.stop", webinar_id, recording_id=recording_id)
        assert stop["ok"], stop
        stopped = await events.wait("recording.stopped")
        assert stopped["recording_id"] == recording_id
        path = Path(stopped["path"])
        assert path == Path(stop["path"]) and path.suffix == ".mp4"
        assert await asyncio.to_thread(os.path.getsize, path) > 10_000
        assert path.is_relative_to(restream.restreamer.recordings / webinar_id)
        seen = await asyncio.to_thread(decode, str(path), 10_000, 10_000, 20.0)
        assert seen.video >= 30 and seen.audio >= 30, seen
        assert seen.sizes == {(WIDTH, HEIGHT)}
        assert seen.luma_levels > 40, seen
    finally:
        await publisher.pc.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/live/key", "rtmp"),
        ("rtmp://127.0.0.1/live/" + "k" * 1100, "longer"),
        ("rtmp://user:pw@127.0.0.1/live/key", "user"),
        ("rtmp://127.0.0.1", "path"),
        ("rtmp://127.0.0.1/live/a key", "spaces"),
        (None, "required"),
        (42, "required"),
    ],
)
async def test_bad_requests(
    nc: NATS, restream: RestreamService, webinar_id: str, url: object, reason: str
) -> None:
    reply = await command(nc, "restream.start", webinar_id, url=url)
    assert reply["ok"] is False and reply["code"] == "invalid", reply
    assert reason in reply["message"], reply


async def test_only_hosts(nc: NATS, restream: RestreamService, webinar_id: str) -> None:
    url = "rtmp://127.0.0.1:1935/live/key"
    for op, args in (
        ("restream.start", {"url": url}),
        ("restream.stop", {"restream_id": "0" * 32}),
        ("recording.start", {}),
        ("recording.stop", {"recording_id": "0" * 32}),
    ):
        reply = await command(nc, op, webinar_id, ATTENDEE, **args)
        assert reply == {"ok": False, "code": "forbidden", "message": reply["message"]}, reply
    panelist = ATTENDEE | {"role": "panelist", "on_stage": True}
    assert (await command(nc, "recording.start", webinar_id, panelist))["code"] == "forbidden"
    missing = await command(nc, "restream.stop", webinar_id, restream_id="0" * 32)
    assert missing["code"] == "not_found", missing
    assert not await restream.redis.exists(outputs_key(webinar_id))
