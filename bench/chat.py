"""Chat service throughput and latency, over real NATS and Redis on loopback.

    .venv/bin/python -m bench.chat [--messages 3000] [--senders 200] [--concurrency 64]
    .venv/bin/python -m bench.chat --rate 100     # latency at a steady 100 messages/s

Starts NATS and Redis (or uses NATS_URL / REDIS_URL), runs `python -m services.chat` as
its own process, then sends `chat.send` requests exactly as signaling does, from many
participants at once, and listens on `webinar.<id>.chat.message` as signaling does.
Prints messages per second, the request-reply latency, and the latency from the request
to its event arriving from the outbox (Redis -> JetStream -> subscriber), p50/p99.

The fan-out to 1000 WebSocket attendees belongs to signaling and is measured there;
this measures what the chat service adds in front of it.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence

import httpx
import nats
from nats.aio.msg import Msg

from tests.infra import NatsServer, RedisServer, free_port


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def start_chat(nats_url: str, redis_url: str) -> asyncio.subprocess.Process:
    port = free_port()
    env = {**os.environ, "NATS_URL": nats_url, "REDIS_URL": redis_url, "CHAT_PORT": str(port),
           "LOG_LEVEL": "WARNING", "CHAT_RATE_LIMIT": "1000000"}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.chat", env=env)
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("chat service did not become healthy")


async def run(nats_url: str, messages: int, senders: int, concurrency: int, rate: float) -> None:
    nc = await nats.connect(nats_url)
    webinar_id = uuid.uuid4().hex[:16]
    sent_at: dict[str, float] = {}
    event_latency: list[float] = []
    all_events = asyncio.Event()
    expected = messages  # lowered by the requests that fail

    async def on_event(msg: Msg) -> None:
        text = json.loads(msg.data)["data"]["text"]
        event_latency.append(time.perf_counter() - sent_at[text])
        if len(event_latency) >= expected:
            all_events.set()

    await nc.subscribe(f"webinar.{webinar_id}.chat.message", cb=on_event)
    await nc.flush()
    reply_latency: list[float] = []
    failures: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(messages):
        queue.put_nowait(i)

    async def send(i: int) -> None:
        text = f"message {i}"
        who = {"id": f"a{i % senders}", "name": f"Attendee {i % senders}", "role": "attendee"}
        body = json.dumps({"webinar_id": webinar_id, "participant": who,
                           "args": {"text": text, "to": "everyone"}}).encode()  # fmt: skip
        sent_at[text] = start = time.perf_counter()
        reply = json.loads((await nc.request("svc.chat.chat.send", body, timeout=10)).data)
        reply_latency.append(time.perf_counter() - start)
        if not reply["ok"]:
            failures[reply["code"]] = failures.get(reply["code"], 0) + 1
            sent_at.pop(text)

    async def worker() -> None:
        while not queue.empty():
            await send(queue.get_nowait())

    began = time.perf_counter()
    if rate > 0:  # open loop: a message every 1/rate s, however long replies take
        tasks = []
        for i in range(messages):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.gather(*tasks)
    else:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    replied = time.perf_counter() - began
    expected = messages - sum(failures.values())
    if len(event_latency) >= expected:
        all_events.set()
    try:
        await asyncio.wait_for(all_events.wait(), 30)
    except TimeoutError:
        print("  (not every event arrived within 30 s)")
    delivered = time.perf_counter() - began
    await nc.drain()

    ms = 1000.0
    load = f"offered at {rate:g}/s" if rate > 0 else f"{concurrency} in flight"
    print(f"chat.send: {messages} requests from {senders} participants, {load}")
    print(f"  handled        {messages / replied:8.0f} messages/s  (failures: {failures or 0})")
    print(f"  reply latency  p50 {percentile(reply_latency, 0.5) * ms:6.1f} ms"
          f"   p99 {percentile(reply_latency, 0.99) * ms:6.1f} ms")  # fmt: skip
    if event_latency:
        print(f"  event latency  p50 {percentile(event_latency, 0.5) * ms:6.1f} ms"
              f"   p99 {percentile(event_latency, 0.99) * ms:6.1f} ms"
              f"   ({len(event_latency)}/{expected} events, "
              f"{len(event_latency) / delivered:.0f} events/s)")  # fmt: skip


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0, help="messages/s offered; 0: flat out")
    args = parser.parse_args(argv)
    servers: list[NatsServer | RedisServer] = []
    nats_url, redis_url = os.environ.get("NATS_URL"), os.environ.get("REDIS_URL")
    if not nats_url:
        nats_server = NatsServer()
        nats_server.start()
        servers.append(nats_server)
        nats_url = nats_server.url
    if not redis_url:
        redis_server = RedisServer()
        redis_server.start()
        servers.append(redis_server)
        redis_url = redis_server.url
    chat = await start_chat(nats_url, redis_url)
    try:
        await run(nats_url, args.messages, args.senders, args.concurrency, args.rate)
    finally:
        chat.send_signal(signal.SIGTERM)
        await chat.wait()
        for server in servers:
            server.stop()


def cli() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    cli()
