"""Replicas, state in Redis and the process itself."""

import asyncio
import json
import os
import time
from pathlib import Path

from nats.aio.client import Client as NATS

from services.media.service import MediaService
from services.restream.main import RestreamService, running
from services.restream.service import instance_key, outputs_key
from tests.infra import NatsServer, RedisServer, free_port, service_process
from tests.restream.conftest import HOST, Events, command


async def test_stop_reaches_the_replica_that_runs_the_output(
    nc: NATS,
    node: MediaService,
    restream: RestreamService,
    events: Events,
    webinar_id: str,
    tmp_path: Path,
) -> None:
    """A recording runs on replica A; the stop lands on replica B (any signaling replica,
    any restream replica): B forwards it to A, which closes the file."""
    await restream.redis.hset(f"sig:{webinar_id}:state", "origin", node.settings.media_node_id)
    other = restream.settings.model_copy(
        update={"restream_recordings_dir": str(tmp_path / "other")}
    )
    body = {"webinar_id": webinar_id, "participant": HOST, "args": {}}
    async with running(other) as replica_b:
        started = await restream.restreamer.handle("recording.start", body)
        assert started["ok"], started
        raw = await replica_b.redis.hget(outputs_key(webinar_id), started["recording_id"])
        assert raw and json.loads(raw)["owner"] == restream.restreamer.instance_id
        await asyncio.sleep(1.0)
        stop = body | {"args": {"recording_id": started["recording_id"]}}
        stopped = await replica_b.restreamer.handle("recording.stop", stop)
        assert stopped["ok"], stopped
        assert stopped["path"] == started["path"]
        event = await events.wait("recording.stopped")
        assert event["recording_id"] == started["recording_id"] and "reason" not in event
        assert not restream.restreamer.running and not replica_b.restreamer.running
        assert await asyncio.to_thread(os.path.getsize, started["path"]) > 1000


async def test_outputs_of_a_gone_replica_are_cleared(
    nc: NATS, restream: RestreamService, events: Events, webinar_id: str
) -> None:
    gone = "0123456789ab"
    output_id = "f" * 32
    entry = {"id": output_id, "kind": "restream", "label": "rtmp://127.0.0.1/live/***",
             "owner": gone, "status": "live", "started_at": time.time()}  # fmt: skip
    await restream.redis.hset(outputs_key(webinar_id), output_id, json.dumps(entry))
    assert not await restream.redis.exists(instance_key(gone))
    reply = await command(nc, "restream.stop", webinar_id, restream_id=output_id)
    assert reply == {"ok": True, "restream_id": output_id}, reply
    event = await events.wait("restream.stopped")
    assert event["restream_id"] == output_id and "restarted" in event["reason"]
    assert not await restream.redis.exists(outputs_key(webinar_id))


async def test_python_m_services_restream(
    nats_server: NatsServer, redis_server: RedisServer, nc: NATS, tmp_path: Path
) -> None:
    port = free_port()
    env = {"NATS_URL": nats_server.url, "REDIS_URL": redis_server.url,
           "RESTREAM_PORT": str(port), "RESTREAM_RECORDINGS_DIR": str(tmp_path),
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    async with service_process("services.restream", env, port) as http:
        reply = await command(nc, "restream.start", "wmain", url="http://127.0.0.1/x")
        assert reply["code"] == "invalid", reply
        metrics = (await http.get("/metrics")).text
        assert "webinar_restream" in metrics
