"""Chat fan-out through signaling: from `chat.send` on one WebSocket to its receipt by
every connected attendee, at 1000 attendees against a baseline of 10, in one run.

    .venv/bin/python -m bench.chat_fanout [--attendees 1000] [--baseline 10]
        [--seconds 8] [--window 8] [--rate 2] [--paced-seconds 10] [--senders 4]

Starts NATS and Redis on free ports (tests/infra.py), then the registry, two signaling
replicas and the chat service, each as its own `python -m services.<name>` process as in
production. This process holds the clients: the host, `--senders` panelists who write,
and the attendees, real WebSockets on loopback alternating between the two replicas.
A message's path: sender's socket -> signaling -> NATS -> chat service -> Redis (history
+ outbox) -> JetStream -> both replicas -> every attendee's socket.

For each audience size, two phases:
- flat out: the panelists send as fast as fan-out allows, with at most `--window`
  messages not yet received by every attendee, for `--seconds`; gives messages/s handled
  (each to every attendee) and the latency under that load;
- paced: `--rate` messages/s for `--paced-seconds`; the latency when not saturated.
Latency is from just before the client writes its `chat.send` frame to the moment an
attendee's client has parsed the `chat.message` event, per (message, attendee), p50/p99.

Limits that are per participant (chat: 5 messages per 5 s; signaling: 20 frames/s) are
raised for the senders, so that fan-out is what is measured. WebSockets negotiate
permessage-deflate as browsers do (`--no-compression` to turn it off).
Everything runs on this machine's cores: the clients' CPU competes with the services'.
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.chat import percentile
from services.common.tokens import Role, TokenIssuer, generate_keypair
from tests.infra import NatsServer, RedisServer, free_port
from tests.registry.conftest import ADMIN, webinar_body

CONNECT_CONCURRENCY = 50
JOIN_ATTEMPTS = 5
PHASE_TIMEOUT = 60.0  # a phase that does not drain by then is reported as incomplete


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- services ------------


class Services:
    """NATS, Redis, the registry, two signaling replicas and chat, as processes."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.servers: list[NatsServer | RedisServer] = []
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []
        self.private, self.public = generate_keypair()
        self.registry_url = ""
        self.replicas: list[str] = []

    async def start(self) -> None:
        nats_server, redis_server = NatsServer(), RedisServer()
        for server in (nats_server, redis_server):
            server.start()
            self.servers.append(server)
        common = {"NATS_URL": nats_server.url, "REDIS_URL": redis_server.url,
                  "LOG_LEVEL": "WARNING", "JWT_PUBLIC_KEY": self.public}  # fmt: skip
        registry_port = free_port()
        self.registry_url = f"http://127.0.0.1:{registry_port}"
        waits = [await self._spawn("registry", "services.registry", registry_port, {
            **common, "REGISTRY_PORT": str(registry_port), "JWT_PRIVATE_KEY": self.private,
            "WEBINAR_ADMIN_KEY": ADMIN})]  # fmt: skip
        chat_port = free_port()
        waits.append(await self._spawn("chat", "services.chat", chat_port, {
            **common, "CHAT_PORT": str(chat_port), "CHAT_RATE_LIMIT": "1000000"}))  # fmt: skip
        for name in ("a", "b"):
            port = free_port()
            self.replicas.append(f"ws://127.0.0.1:{port}/v1/ws")
            waits.append(await self._spawn(f"signaling-{name}", "services.signaling", port, {
                **common, "SIGNALING_PORT": str(port), "SIGNALING_REPLICA_ID": name,
                "SIGNALING_RATE_PER_SECOND": "10000", "SIGNALING_RATE_BURST": "10000",
                "PUBLIC_REGISTRY_URL": self.registry_url}))  # fmt: skip
        await asyncio.gather(*waits)

    async def _spawn(self, name: str, module: str, port: int, env: dict[str, str]):
        log = (self.logs / f"{name}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, env={**os.environ, **env},
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self.procs.append((name, proc))
        return self._healthy(name, proc, f"http://127.0.0.1:{port}/healthz")

    async def _healthy(self, name: str, proc: asyncio.subprocess.Process, url: str) -> None:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                if proc.returncode is not None:
                    raise RuntimeError(f"{name} exited; see {self.logs / name}.log")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} did not become healthy; see {self.logs / name}.log")

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far, by process."""
        pids = {"clients (this)": os.getpid(), "nats": self.servers[0].proc.pid,
                "redis": self.servers[1].proc.pid}  # fmt: skip
        pids |= {name: proc.pid for name, proc in self.procs}
        used = {}
        for name, pid in pids.items():
            times = psutil.Process(pid).cpu_times()
            used[name] = times.user + times.system
        return used

    async def stop(self) -> None:
        for _, proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for server in self.servers:
            server.stop()


# ---------------------------------------------------------------- clients -------------


@dataclass
class Fanout:
    """Receipts of the benchmark's messages (`bench <seq>`) at the attendees."""

    audience: int
    sent_at: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    complete: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def received(self, text: str, now: float) -> None:
        seq = int(text.rsplit(" ", 1)[1])
        sent = self.sent_at.get(seq)
        if sent is None:
            return
        self.latencies.append(now - sent)
        self.counts[seq] = count = self.counts.get(seq, 0) + 1
        if count == self.audience:
            self.complete += 1
            self.changed.set()

    def in_flight(self) -> int:
        return len(self.sent_at) - self.complete


@dataclass
class Room:
    webinar_id: str
    host: ClientConnection
    senders: list[ClientConnection]
    attendees: list[ClientConnection]
    tasks: list[asyncio.Task[None]]
    replies: dict[str, int] = field(default_factory=dict)
    fanout: Fanout | None = None
    closed: int = 0


async def attendee_reader(room: Room, ws: ClientConnection) -> None:
    try:
        async for raw in ws:
            if room.fanout is None or '"chat.message"' not in raw:
                continue
            now = time.perf_counter()
            frame = json.loads(raw)
            if frame.get("type") == "event" and frame.get("event") == "chat.message":
                room.fanout.received(frame["data"]["text"], now)
    except ConnectionClosed:
        pass
    finally:
        room.closed += 1


async def sender_reader(room: Room, ws: ClientConnection) -> None:
    """Drains a sender's (or the host's) socket and counts its replies by outcome."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            frame = json.loads(raw)
            if "id" in frame:
                outcome = frame["type"] if frame["type"] == "ok" else frame.get("code", "error")
                room.replies[outcome] = room.replies.get(outcome, 0) + 1


async def open_room(svc: Services, attendees: int, senders: int, compression: str | None
                    ) -> Room:  # fmt: skip
    async with httpx.AsyncClient(base_url=svc.registry_url) as http:
        resp = await http.post(
            "/v1/webinars", json=webinar_body(title="Chat fan-out", capacity=attendees + 10),
            headers={"Authorization": f"Bearer {ADMIN}"},
        )  # fmt: skip
        resp.raise_for_status()
        created = resp.json()
    wid = created["id"]
    issuer = TokenIssuer(svc.private)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    retried: list[str] = []

    async def join(token: str, replica: int) -> ClientConnection:
        """Connect and wait for the welcome; like a real client, try again after
        `unavailable` (close code 1012/1013: reconnect shortly)."""
        url = f"{svc.replicas[replica % len(svc.replicas)]}?token={token}"
        for _ in range(JOIN_ATTEMPTS):
            async with gate:
                ws = await connect(url, open_timeout=60, compression=compression,
                                   max_queue=None)  # fmt: skip
                try:
                    first = json.loads(await ws.recv())
                except ConnectionClosed as exc:
                    first = {"type": "closed", "code": str(exc.rcvd and exc.rcvd.code)}
            if first.get("type") == "welcome":
                return ws
            await ws.close()
            if first.get("code") not in ("unavailable", "1012", "1013"):
                raise RuntimeError(f"not welcomed: {first}")
            retried.append(str(first.get("message", first.get("code"))))
            await asyncio.sleep(0.5)
        raise RuntimeError(f"not welcomed after {JOIN_ATTEMPTS} attempts: {first}")

    def token(role: Role, i: int) -> str:
        pid = f"{role.value[0]}{i}_{uuid.uuid4().hex[:6]}"
        return issuer.issue(wid, pid, f"{role.value} {i}", role, int(time.time()) + 3600)

    host = await join(created["host"]["token"], 0)
    await host.send(json.dumps({"id": 1, "type": "webinar.start"}))
    while json.loads(await host.recv()).get("id") != 1:
        pass
    panelists = await asyncio.gather(*(join(token(Role.PANELIST, i), i) for i in range(senders)))
    crowd = await asyncio.gather(*(join(token(Role.ATTENDEE, i), i) for i in range(attendees)))
    room = Room(wid, host, list(panelists), list(crowd), [])
    if retried:
        print(f"  !! {len(retried)} joins had to be retried: {sorted(set(retried))}")
    room.tasks = [asyncio.create_task(sender_reader(room, ws)) for ws in [host, *panelists]]
    room.tasks += [asyncio.create_task(attendee_reader(room, ws)) for ws in crowd]
    return room


async def close_room(room: Room) -> None:
    everyone = [room.host, *room.senders, *room.attendees]
    for start in range(0, len(everyone), CONNECT_CONCURRENCY):
        batch = everyone[start : start + CONNECT_CONCURRENCY]
        await asyncio.gather(*(ws.close() for ws in batch),
                             return_exceptions=True)  # fmt: skip
    for task in room.tasks:
        task.cancel()
    await asyncio.gather(*room.tasks, return_exceptions=True)


# ---------------------------------------------------------------- measuring -----------


@dataclass
class Result:
    attendees: int
    phase: str
    messages: int
    complete: int
    seconds: float
    p50: float
    p99: float

    @property
    def rate(self) -> float:
        return self.complete / self.seconds if self.seconds else 0.0


async def phase(room: Room, name: str, seconds: float, window: int, rate: float) -> Result:
    """Send for `seconds` (flat out with `window` in flight, or at `rate` per second)."""
    fanout = room.fanout = Fanout(len(room.attendees))
    seq = 0

    async def send_one() -> None:
        nonlocal seq
        ws = room.senders[seq % len(room.senders)]
        frame = json.dumps({"id": seq + 100, "type": "chat.send", "text": f"bench {seq}",
                            "to": "everyone"})  # fmt: skip
        fanout.sent_at[seq] = time.perf_counter()
        seq += 1
        await ws.send(frame)

    began = time.perf_counter()
    stop_at = began + seconds
    while time.perf_counter() < stop_at:
        if rate > 0:
            await asyncio.sleep(max(0.0, began + seq / rate - time.perf_counter()))
            await send_one()
        elif fanout.in_flight() < window:
            await send_one()
        else:
            fanout.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fanout.changed.wait(), 1.0)
    drain_by = time.perf_counter() + PHASE_TIMEOUT
    while fanout.in_flight() and time.perf_counter() < drain_by and room.closed == 0:
        fanout.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fanout.changed.wait(), 0.5)
    finished = time.perf_counter()
    room.fanout = None
    lat = fanout.latencies or [float("nan")]
    return Result(len(room.attendees), name, seq, fanout.complete, finished - began,
                  percentile(lat, 0.5), percentile(lat, 0.99))  # fmt: skip


def report(result: Result) -> None:
    ms = 1000.0
    deliveries = result.rate * result.attendees
    missing = (
        ""
        if result.complete == result.messages
        else (f"  INCOMPLETE: {result.messages - result.complete} messages not received by all")
    )
    print(f"  {result.attendees:5d} attendees  {result.phase:<18} {result.messages:5d} msgs"
          f"  {result.rate:8.1f} msgs/s  {deliveries:9.0f} deliveries/s"
          f"  p50 {result.p50 * ms:7.1f} ms  p99 {result.p99 * ms:7.1f} ms{missing}",
          flush=True)  # fmt: skip


async def measure(svc: Services, attendees: int, args: argparse.Namespace) -> list[Result]:
    began = time.perf_counter()
    room = await open_room(svc, attendees, args.senders, args.compression)
    print(f"  {attendees} attendees connected (+ host, {args.senders} panelists writing) "
          f"in {time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
    try:
        await phase(room, "warm-up", 1.0, args.window, 0)
        before = svc.cpu()
        flat = await phase(room, f"flat out, {args.window} in flight", args.seconds,
                           args.window, 0)  # fmt: skip
        after = svc.cpu()
        paced = await phase(room, f"paced at {args.rate:g}/s", args.paced_seconds,
                            args.window, args.rate)  # fmt: skip
        results = [flat, paced]
        for result in results:
            report(result)
        busy = ", ".join(f"{name} {(after[name] - before[name]) / flat.seconds:.0%}"
                         for name in after)  # fmt: skip
        print(f"  CPU while flat out (100% = one core): {busy}", flush=True)
        refused = {k: v for k, v in room.replies.items() if k != "ok"}
        if refused or room.closed:
            print(f"  !! refused chat.send: {refused or 0}; attendee sockets closed: "
                  f"{room.closed}")  # fmt: skip
        return results
    finally:
        await close_room(room)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--attendees", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0, help="flat-out phase length")
    parser.add_argument("--window", type=int, default=8, help="messages in flight, flat out")
    parser.add_argument("--rate", type=float, default=2.0, help="messages/s, paced phase")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=4, help="panelists who write")
    parser.add_argument("--no-compression", dest="compression", action="store_const",
                        const=None, default="deflate")  # fmt: skip
    args = parser.parse_args(argv)
    limit = raise_fd_limit(4 * (args.attendees + args.baseline) + 1024)
    logs = Path(tempfile.mkdtemp(prefix="bench-chat-fanout-"))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"chat fan-out through signaling: 2 signaling replicas, chat, registry, NATS, Redis "
          f"on loopback; {os.cpu_count()} CPUs (load average {load}); open files limit {limit};"
          f" logs in {logs}", flush=True)  # fmt: skip
    svc = Services(logs)
    began = time.perf_counter()
    try:
        await svc.start()
        print(f"  services up in {time.perf_counter() - began:.1f} s", flush=True)
        base = await measure(svc, args.baseline, args)
        full = await measure(svc, args.attendees, args)
    finally:
        await svc.stop()
    print(f"{args.attendees} attendees vs {args.baseline} (ratio):")
    for b, f in zip(base, full, strict=True):
        print(f"  {f.phase:<22} msgs/s x{f.rate / b.rate:6.2f}"
              f"   deliveries/s x{f.rate * f.attendees / (b.rate * b.attendees):6.1f}"
              f"   p50 x{f.p50 / b.p50:6.1f}   p99 x{f.p99 / b.p99:6.1f}")  # fmt: skip
    print(f"total {time.perf_counter() - began:.0f} s")


def cli() -> None:
    try:
        import uvloop  # the services run on uvloop too (uvicorn[standard])
    except ImportError:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())


if __name__ == "__main__":
    cli()
