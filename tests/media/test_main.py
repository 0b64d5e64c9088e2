"""`python -m services.media` starts a node that answers, beats and stops on SIGTERM."""

import asyncio
import json
import os
import signal
import sys
import uuid

from nats.aio.client import Client as NATS

from tests.infra import NatsServer, RedisServer


async def test_module_runs_a_node_until_sigterm(
    nats_server: NatsServer, redis_server: RedisServer, nc: NATS
) -> None:
    node_id = f"main{uuid.uuid4().hex[:6]}"
    beats: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def on_beat(msg) -> None:  # type: ignore[no-untyped-def]
        beat = json.loads(msg.data)
        if beat["node_id"] == node_id:
            await beats.put(beat)

    await nc.subscribe("svc.media.heartbeat", cb=on_beat)
    env = dict(os.environ, NATS_URL=nats_server.url, REDIS_URL=redis_server.url,
               MEDIA_NODE_ID=node_id, MEDIA_ICE_HOST="127.0.0.1", MEDIA_CAPACITY="3")  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.media", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        beat = await asyncio.wait_for(beats.get(), 20)
        assert beat["capacity"] == 3 and beat["draining"] is False
        msg = await nc.request(f"svc.media.{node_id}.publish",
                               json.dumps({"webinar_id": "w", "participant_id": "p",
                                           "sdp": "nonsense"}).encode(), timeout=5)  # fmt: skip
        assert json.loads(msg.data)["code"] == "invalid"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
