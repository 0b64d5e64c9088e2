"""Real parts for the restream tests: NATS and Redis (the session's, tests/conftest.py),
an nginx RTMP server (Debian packages `nginx` and `libnginx-mod-rtmp`), a media node and
the restream service in-process, and aiortc publishers from tests/media/peers.py."""

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common.connections import connect_nats
from services.media.service import MediaService, media_node
from services.media.settings import MediaSettings
from services.restream.main import RestreamService, running
from services.restream.settings import RestreamSettings
from tests.infra import NatsServer, RedisServer, free_port, wait_port

SLOTS = (2, 2, 1)  # audio, video, screen: small, to keep a shared machine calm
WIDTH, HEIGHT, FPS = 640, 360, 15
RTMP_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/share/nginx/modules/ngx_rtmp_module.so",
)
HOST = {"id": "p-host", "name": "Host", "role": "host", "on_stage": True}


def rtmp_module() -> str:
    for path in RTMP_MODULE_PATHS:
        if Path(path).exists():
            return path
    conf = Path("/usr/share/nginx/modules-available/mod-rtmp.conf")
    if conf.exists():  # "load_module modules/ngx_rtmp_module.so;" relative to /usr/share/nginx
        name = conf.read_text().split()[1].rstrip(";")
        for base in ("/usr/share/nginx", "/usr/lib/nginx"):
            if (Path(base) / name).exists():
                return str(Path(base) / name)
    raise RuntimeError("the nginx RTMP module is missing: apt-get install libnginx-mod-rtmp")


@dataclass
class Rtmp:
    port: int
    prefix: Path

    def url(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{stream}"


@pytest.fixture
def rtmp_server(tmp_path: Path) -> Iterator[Rtmp]:
    """nginx with the RTMP module on a free loopback port, in the foreground."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"load_module {rtmp_module()};\n"
        "daemon off;\nmaster_process off;\n"
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log info;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n"
        "  application live { live on; record off; } } }\n"
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs/error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield Rtmp(port, prefix)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await connect_nats(nats_server.url, "restream-test-client")
    yield client
    await client.drain()


@pytest.fixture
def webinar_id() -> str:
    return f"w{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def node(nats_server: NatsServer, redis_server: RedisServer) -> AsyncIterator[MediaService]:
    settings = MediaSettings(
        nats_url=nats_server.url,
        redis_url=redis_server.url,
        media_node_id=f"n{uuid.uuid4().hex[:8]}",
        media_ice_host="127.0.0.1",  # loopback only; no STUN/TURN
        media_heartbeat_interval=0.25,
        media_slots_audio=SLOTS[0],
        media_slots_video=SLOTS[1],
        media_slots_screen=SLOTS[2],
    )
    async with media_node(settings) as service:
        yield service


@pytest.fixture
async def restream(
    nats_server: NatsServer, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[RestreamService]:
    settings = RestreamSettings(
        nats_url=nats_server.url,
        redis_url=redis_server.url,
        restream_recordings_dir=str(tmp_path / "recordings"),
        restream_width=WIDTH,
        restream_height=HEIGHT,
        restream_fps=FPS,
        restream_video_bitrate=600_000,
        restream_audio_bitrate=64_000,
        restream_x264_preset="ultrafast",
        restream_keyframe_seconds=1.0,
        restream_slots_audio=SLOTS[0],
        restream_slots_video=SLOTS[1],
        restream_slots_screen=SLOTS[2],
        restream_connect_timeout_seconds=3.0,
    )
    async with running(settings) as service:
        yield service


@dataclass
class Events:
    """The public events of one webinar, as an integrator receives them on NATS."""

    received: list[dict[str, Any]] = field(default_factory=list)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        wanted = f"io.webinar.{event_type}.v1"
        return [e["data"] for e in self.received if e.get("type") == wanted]

    async def wait(self, event_type: str, within: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while not self.of(event_type):
            seen = [e.get("type") for e in self.received]
            assert time.monotonic() < deadline, f"no {event_type} event; got {seen}"
            await asyncio.sleep(0.05)
        return self.of(event_type)[0]


@pytest.fixture
async def events(nc: NATS, webinar_id: str) -> AsyncIterator[Events]:
    collected = Events()

    async def on_event(msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            collected.received.append(json.loads(msg.data))

    sub = await nc.subscribe(f"webinar.{webinar_id}.>", cb=on_event)
    yield collected
    await sub.unsubscribe()


async def command(
    nc: NATS, op: str, webinar_id: str, participant: dict[str, Any] | None = None, **args: Any
) -> dict[str, Any]:
    """A command as signaling forwards a client's request."""
    body = {"webinar_id": webinar_id, "participant": participant or HOST, "args": args}
    msg = await nc.request(f"svc.restream.{op}", json.dumps(body).encode(), timeout=20)
    reply: dict[str, Any] = json.loads(msg.data)
    return reply
