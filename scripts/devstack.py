"""`make run`: the whole platform on one machine.

Reuses NATS and Redis at NATS_URL / REDIS_URL when they answer, otherwise starts
embedded ones under .data/; starts one process per service with prefixed logs;
creates a demo webinar and prints its links. Ctrl-C stops everything it started.
To plug in a new service, add one entry to SERVICES.
"""

import asyncio
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

from services.common.tokens import generate_keypair
from services.registry.settings import DEV_ADMIN_KEY

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DEVSTACK_DATA", ROOT / ".data"))
BIN = Path(sys.executable).parent


@dataclass
class Service:
    name: str
    module: str
    env: dict[str, str] = field(default_factory=dict)
    health_url: str = ""


SIGNALING_PORT = os.environ.get("SIGNALING_PORT", "8080")
REGISTRY_PORT = os.environ.get("REGISTRY_PORT", "8081")
CHAT_PORT = os.environ.get("CHAT_PORT", "8083")
MEDIA_PORT = int(os.environ.get("MEDIA_HTTP_PORT", "8091"))
RESTREAM_PORT = os.environ.get("RESTREAM_PORT", "8084")
SIGNALING_URL = f"http://127.0.0.1:{SIGNALING_PORT}"
REGISTRY_URL = f"http://127.0.0.1:{REGISTRY_PORT}"

SERVICES = [
    Service("registry", "services.registry", {"REGISTRY_PORT": REGISTRY_PORT},
            f"{REGISTRY_URL}/healthz"),
    Service("signaling", "services.signaling", {"SIGNALING_PORT": SIGNALING_PORT},
            f"{SIGNALING_URL}/healthz"),
    Service("chat", "services.chat", {"CHAT_PORT": CHAT_PORT},
            f"http://127.0.0.1:{CHAT_PORT}/healthz"),
    Service("media-1", "services.media", {"MEDIA_NODE_ID": "media-1",
            "MEDIA_HTTP_PORT": str(MEDIA_PORT)}, f"http://127.0.0.1:{MEDIA_PORT}/healthz"),
    Service("media-2", "services.media", {"MEDIA_NODE_ID": "media-2",
            "MEDIA_HTTP_PORT": str(MEDIA_PORT + 1)}, f"http://127.0.0.1:{MEDIA_PORT + 1}/healthz"),
    Service("restream", "services.restream", {"RESTREAM_PORT": RESTREAM_PORT},
            f"http://127.0.0.1:{RESTREAM_PORT}/healthz"),
]  # fmt: skip

COLOURS = ["36", "33", "35", "32", "34", "31", "96", "93"]


def reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 1):
            return True
    except OSError:
        return False


def binary(name: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if not found:
        sys.exit(f"{name} is not installed and no server answers; run `make install`")
    return found


def keys() -> tuple[Path, Path]:
    folder = DATA / "keys"
    private, public = folder / "join-private.pem", folder / "join-public.pem"
    if not private.exists():
        folder.mkdir(parents=True, exist_ok=True)
        priv_pem, pub_pem = generate_keypair()
        private.write_text(priv_pem)
        private.chmod(0o600)
        public.write_text(pub_pem)
    return private, public


class Stack:
    def __init__(self) -> None:
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []
        self.relays: list[asyncio.Task[None]] = []

    async def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *args, env={**os.environ, **env}, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        colour = COLOURS[len(self.procs) % len(COLOURS)]
        self.procs.append((name, proc))
        self.relays.append(asyncio.create_task(self._relay(name, colour, proc)))

    async def _relay(self, name: str, colour: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout
        prefix = f"\033[{colour}m{name:>10} |\033[0m " if sys.stdout.isatty() else f"{name:>10} | "
        async for line in proc.stdout:
            sys.stdout.write(prefix + line.decode(errors="replace"))
            sys.stdout.flush()
        code = await proc.wait()
        print(f"{prefix}exited with code {code}", flush=True)

    async def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()


async def infrastructure(stack: Stack, nats_url: str, redis_url: str) -> None:
    if reachable(nats_url):
        print(f"using NATS at {nats_url}")
    else:
        port = str(urlparse(nats_url).port or 4222)
        (DATA / "nats").mkdir(parents=True, exist_ok=True)
        print(f"starting embedded NATS (JetStream) on port {port}, data in .data/nats")
        await stack.spawn("nats", [binary("nats-server"), "-a", "127.0.0.1", "-p", port, "-js",
                                   "-sd", str(DATA / "nats")], {})  # fmt: skip
    if reachable(redis_url):
        print(f"using Redis at {urlparse(redis_url).hostname}:{urlparse(redis_url).port}")
    else:
        port = str(urlparse(redis_url).port or 6379)
        (DATA / "redis").mkdir(parents=True, exist_ok=True)
        print(f"starting embedded Redis on port {port}, data in .data/redis")
        args = [binary("redis-server"), "--port", port, "--bind", "127.0.0.1",
                "--dir", str(DATA / "redis"), "--appendonly", "yes"]  # fmt: skip
        await stack.spawn("redis", args, {})


async def wait_healthy(url: str, limit: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    async with httpx.AsyncClient() as http:
        while asyncio.get_running_loop().time() < deadline:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {limit}s")


async def demo_webinar(admin_key: str) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=REGISTRY_URL, timeout=10) as http:
        body = {"title": "Demo webinar", "starts_at": datetime.now(UTC).isoformat(),
                "duration_minutes": 60, "mode": "webinar", "capacity": 1000,
                "approval": "auto", "allow_anonymous_questions": True}  # fmt: skip
        created = (
            (await http.post("/v1/webinars", json=body, headers=auth)).raise_for_status().json()
        )
        wid = created["id"]
        pat = {"name": "Pat Panelist", "email": "pat@example.org"}
        panelist = await http.post(f"/v1/webinars/{wid}/panelists", headers=auth, json=pat)
        ann = {"name": "Ann Attendee", "email": "ann@example.org"}
        attendee = await http.post(f"/v1/webinars/{wid}/registrations", json=ann)
    print("\n" + "=" * 72)
    print(f"Demo webinar {wid} is ready.")
    print(f"  host:         {created['host']['join_url']}")
    print(f"  panelist:     {panelist.json()['join_url']}")
    print(f"  attendee:     {attendee.json()['join_url']}")
    print(f"  registration: {created['registration_url']}")
    print(f"  registry API: {REGISTRY_URL}/docs   organizer key: {admin_key}")
    print("Press Ctrl-C to stop everything.")
    print("=" * 72 + "\n", flush=True)


async def main() -> None:
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    admin_key = os.environ.get("WEBINAR_ADMIN_KEY", DEV_ADMIN_KEY)
    if admin_key == DEV_ADMIN_KEY:
        print(f"organizer key (development default): {admin_key}")
    private, public = keys()
    env = {"NATS_URL": nats_url, "REDIS_URL": redis_url, "WEBINAR_ADMIN_KEY": admin_key,
           "JWT_PRIVATE_KEY_FILE": str(private), "JWT_PUBLIC_KEY_FILE": str(public),
           "PUBLIC_WEB_URL": SIGNALING_URL, "PUBLIC_REGISTRY_URL": REGISTRY_URL,
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    stack = Stack()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await infrastructure(stack, nats_url, redis_url)
        started = []
        for svc in SERVICES:
            if not (ROOT / svc.module.replace(".", "/") / "__main__.py").exists():
                continue
            await stack.spawn(svc.name, [sys.executable, "-m", svc.module], {**env, **svc.env})
            started.append(svc)
        for svc in started:
            if svc.health_url:
                await wait_healthy(svc.health_url)
        await demo_webinar(admin_key)
        await stop.wait()
    finally:
        print("\nstopping…", flush=True)
        await stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
