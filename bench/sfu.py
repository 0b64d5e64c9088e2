"""SFU benchmark: the media node's forwarding cost against aiortc's MediaRelay.

    python -m bench.sfu [--sizes 10,50,100,200] [--seconds 5] [--relay-viewers 2]

The SFU runs in its own process (its CPU time is what is measured); the publisher and
the subscribers run in this one. The publisher sends pre-encoded packets at a fixed
rate: VP8 at 25 fps x 5000 B (4 RTP packets per frame, 100 packets/s, about 1 Mbit/s)
plus Opus-sized audio (50 packets/s x 120 B). Subscribers count packets without
decrypting cost beyond SRTP. For each N the SFU's CPU is measured idle (publisher
paused) and busy; the difference over the packets it sent gives microseconds per
forwarded packet per subscriber. The MediaRelay baseline decodes the publisher's
real VP8 and Opus once and re-encodes them for every viewer.
"""

import argparse
import asyncio
import fractions
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/sfu.py` as well as `python -m bench.sfu`
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
from aiortc import (  # noqa: E402
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack  # noqa: E402

from services.media import aiortc_adapter as adapter  # noqa: E402
from services.media.node import MediaNode  # noqa: E402
from services.media.settings import MediaSettings  # noqa: E402

VIDEO_FPS, VIDEO_BYTES = 25, 5000
AUDIO_PPS, AUDIO_BYTES = 50, 120
PPS_PER_VIEWER = VIDEO_FPS * 4 + AUDIO_PPS  # 5000 B frames go out as 4 RTP packets
CONFIG = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


# ---------------------------------------------------------------- SFU process ---------


class RelaySfu:
    """The naive approach: aiortc decodes the publisher, re-encodes per subscriber."""

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.tracks: list[MediaStreamTrack] = []
        self.pcs: list[RTCPeerConnection] = []

    async def publish(self, sdp: str) -> str:
        pc = RTCPeerConnection(CONFIG)
        self.pcs.append(pc)
        pc.on("track", lambda track: self.tracks.append(track))
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def subscribe(self, sdp: str) -> str:
        pc = RTCPeerConnection(CONFIG)
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        for track in self.tracks:
            pc.addTrack(self.relay.subscribe(track, buffered=False))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)


async def serve(mode: str, port: int) -> None:
    settings = MediaSettings(
        media_node_id="bench",
        media_slots_audio=1,
        media_slots_video=1,
        media_slots_screen=0,
        media_capacity=100_000,
    )
    adapter.configure_host_addresses(["127.0.0.1"])
    node = MediaNode(settings) if mode == "forward" else None
    relay = RelaySfu() if mode == "relay" else None
    if node is not None:
        await node.start()
    received = [0]

    def stats() -> dict[str, Any]:
        sent = legs = incoming = 0
        if node is not None:
            for room in node.rooms.values():
                for sub in room.subscribers.values():
                    for leg in sub.legs:
                        if leg is not None:
                            sent += leg.packets
                            legs += 1
                incoming = sum(s.received for s in room.sources.values())
        return {"cpu": time.process_time(), "wall": time.monotonic(), "sent": sent,
                "legs": legs, "in": incoming or received[0]}  # fmt: skip

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            msg = json.loads(line)
            op = msg["op"]
            res: dict[str, Any] = {}
            if op == "pub":
                if node is not None:
                    res = {"sdp": await node.publish("bench", "speaker", msg["sdp"])}
                elif relay is not None:
                    res = {"sdp": await relay.publish(msg["sdp"])}
            elif op == "sub":
                if node is not None:
                    res = {"sdp": await node.subscribe("bench", msg["id"], msg["sdp"])}
                elif relay is not None:
                    res = {"sdp": await relay.subscribe(msg["sdp"])}
            elif op == "stats":
                res = stats()
            elif op == "burst" and node is not None:
                res = await burst(node, msg["packets"], msg["reps"], msg["stop_clients"])
            elif op == "profile":  # where the SFU's time goes, to stderr
                import cProfile
                import pstats

                profiler = cProfile.Profile()
                profiler.enable()
                await asyncio.sleep(msg["seconds"])
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(18)
            writer.write((json.dumps(res) + "\n").encode())
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


async def burst(node: MediaNode, packets: int, reps: int, stop_clients: bool) -> dict[str, Any]:
    """Replay the latest video packet through the real forwarding path in a tight loop;
    optionally with the clients process stopped, so that no receiver wakes up on the
    loopback sockets (what a NIC would spare the SFU)."""
    room = node.rooms["bench"]
    source = next(s for s in room.sources.values() if s.kind == "video")
    template = source.history.get(source._max_seq)
    assert template is not None
    seq = source._max_seq
    cpu = 0.0
    sends = 0
    for _ in range(reps):
        if stop_clients:
            os.kill(os.getppid(), signal.SIGSTOP)
        try:
            sent0 = sum(leg.packets for leg in source.legs)
            c0 = time.process_time()
            for _ in range(packets):
                seq = (seq + 1) & 0xFFFF  # fresh sequence numbers: duplicates are dropped
                await source.on_rtp(template[:2] + struct.pack("!H", seq) + template[4:])
            cpu += time.process_time() - c0
            sends += sum(leg.packets for leg in source.legs) - sent0
        finally:
            if stop_clients:
                os.kill(os.getppid(), signal.SIGCONT)
        await asyncio.sleep(0.5)
    return {"sends": sends, "us_per_send": round(1e6 * cpu / max(sends, 1), 2)}


# ------------------------------------------------------------ clients process ---------


class PacketTrack(MediaStreamTrack):
    """Pre-encoded packets at a fixed rate: the sender packetizes, never encodes."""

    def __init__(self, kind: str, rate: int, size: int, clock: int, gate: asyncio.Event):
        super().__init__()
        self.kind = kind
        self.rate, self.clock, self.gate = rate, clock, gate
        self.payload = bytes(random.getrandbits(8) for _ in range(size))
        self.n = 0
        self.t0: float | None = None

    async def recv(self) -> av.Packet:
        if not self.gate.is_set():
            await self.gate.wait()
            self.t0 = None
        if self.t0 is None:
            self.t0 = time.monotonic() - self.n / self.rate
        self.n += 1
        wait = self.t0 + self.n / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        payload = self.payload
        if self.kind == "video":  # VP8 P bit: a keyframe every second, deltas between
            payload = bytes([0x00 if self.n % self.rate == 1 else 0x01]) + payload[1:]
        packet = av.Packet(payload)
        packet.pts = self.n * self.clock // self.rate
        packet.time_base = fractions.Fraction(1, self.clock)
        return packet


class Rpc:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.lock = reader, writer, asyncio.Lock()

    async def __call__(self, **msg: Any) -> dict[str, Any]:
        async with self.lock:
            self.writer.write((json.dumps(msg) + "\n").encode())
            await self.writer.drain()
            reply: dict[str, Any] = json.loads(await self.reader.readline())
            return reply


def prefer_vp8(pc: RTCPeerConnection) -> None:
    for t in pc.getTransceivers():
        if t.kind == "video":
            caps = RTCRtpSender.getCapabilities("video").codecs
            t.setCodecPreferences([c for c in caps if c.name in ("VP8", "rtx")])


class Bench:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = 20000 + os.getpid() % 20000
        self.proc: asyncio.subprocess.Process | None = None
        self.pcs: list[RTCPeerConnection] = []
        self.counts: list[list[int]] = []
        self.gate = asyncio.Event()

    async def start(self) -> Rpc:
        args = [sys.executable, "-m", "bench.sfu", "--serve", self.mode, "--port", str(self.port)]
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, cwd=ROOT)
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        assert line.strip() == b"READY", line
        self.rpc = Rpc(*await asyncio.open_connection("127.0.0.1", self.port))
        return self.rpc

    async def publisher(self) -> None:
        pc = RTCPeerConnection(CONFIG)
        self.pcs.append(pc)
        if self.mode == "relay":  # real frames for the SFU to decode and re-encode
            pc.addTrack(AudioStreamTrack())
            pc.addTrack(VideoStreamTrack())
        else:
            pc.addTrack(PacketTrack("audio", AUDIO_PPS, AUDIO_BYTES, 48000, self.gate))
            pc.addTrack(PacketTrack("video", VIDEO_FPS, VIDEO_BYTES, 90000, self.gate))
        prefer_vp8(pc)
        await pc.setLocalDescription(await pc.createOffer())
        answer = (await self.rpc(op="pub", sdp=pc.localDescription.sdp))["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self.pub = pc

    async def subscriber(self, i: int) -> RTCPeerConnection:
        pc = RTCPeerConnection(CONFIG)
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        prefer_vp8(pc)
        await pc.setLocalDescription(await pc.createOffer())
        count = [0]
        self.counts.append(count)
        dtls = pc.getTransceivers()[0].receiver.transport

        async def count_only(data: bytes, arrival_time_ms: int, count: list[int] = count) -> None:
            count[0] += 1  # a cheap viewer: SRTP unprotect, no depacketizing or decoding

        dtls._handle_rtp_data = count_only  # type: ignore[method-assign]
        answer = (await self.rpc(op="sub", id=f"v{i}", sdp=pc.localDescription.sdp))["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self.pcs.append(pc)
        return pc

    async def grow(self, n: int) -> float:
        t0 = time.monotonic()
        have = len(self.pcs) - 1
        new: list[RTCPeerConnection] = []
        for start in range(have, n, 10):
            batch = range(start, min(n, start + 10))
            new += await asyncio.gather(*(self.subscriber(i) for i in batch))
        for _ in range(600):  # up to 2 minutes
            if all(pc.connectionState == "connected" for pc in [*new, self.pub]):
                break
            await asyncio.sleep(0.2)
        return time.monotonic() - t0

    async def measure(self, seconds: float) -> tuple[dict[str, Any], dict[str, Any], int]:
        s0 = await self.rpc(op="stats")
        r0 = sum(c[0] for c in self.counts)
        await asyncio.sleep(seconds)
        s1 = await self.rpc(op="stats")
        return s0, s1, sum(c[0] for c in self.counts) - r0

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()
        if self.proc is not None:
            self.proc.terminate()
            await self.proc.wait()


async def run_forward(
    sizes: list[int], seconds: float, profile: bool = False
) -> list[dict[str, Any]]:
    bench = Bench("forward")
    await bench.start()
    results = []
    try:
        await bench.publisher()
        bench.gate.set()  # let the tracks go live and take their slots
        await asyncio.sleep(1.0)
        for n in sizes:
            bench.gate.clear()
            setup = await bench.grow(n)
            await asyncio.sleep(1.0)
            i0, i1, _ = await bench.measure(min(seconds, 3.0))  # idle: publisher paused
            idle = (i1["cpu"] - i0["cpu"]) / (i1["wall"] - i0["wall"])
            bench.gate.set()
            await asyncio.sleep(1.5)
            b0, b1, received = await bench.measure(seconds)
            wall = b1["wall"] - b0["wall"]
            busy = (b1["cpu"] - b0["cpu"]) / wall
            sent = b1["sent"] - b0["sent"]
            net = max(busy - idle, 1e-9)
            in_pps = (b1["in"] - b0["in"]) / wall
            per_viewer_pps = sent / wall / n
            results.append({
                "N": n, "setup_s": round(setup, 1), "legs": b1["legs"],
                "in_pps": round(in_pps), "sent_pps": round(sent / wall),
                "viewers_recv_pps": round(received / wall),
                "cpu_idle_pct": round(100 * idle, 1), "cpu_busy_pct": round(100 * busy, 1),
                "us_per_pkt_per_sub": round(1e6 * net * wall / max(sent, 1), 2),
                "us_per_pkt_gross": round(1e6 * busy * wall / max(sent, 1), 2),
                "pkts_per_core_s": round(sent / wall / net),
                "viewers_per_core": round(sent / wall / net / PPS_PER_VIEWER),
                "viewer_pps": round(per_viewer_pps),
            })  # fmt: skip
            print("forward", json.dumps(results[-1]), flush=True)
            if n == sizes[-1]:
                bench.gate.clear()
                await asyncio.sleep(0.5)
                for stop in (False, True):
                    b = await bench.rpc(op="burst", packets=20, reps=4, stop_clients=stop)
                    results[-1]["burst_us_clients_" + ("stopped" if stop else "running")] = b[
                        "us_per_send"
                    ]
                bench.gate.set()
                print("burst", json.dumps(results[-1]), flush=True)
            if profile and n == sizes[-1]:
                await bench.rpc(op="profile", seconds=3)
    finally:
        await bench.close()
    return results


async def run_relay(viewers: int, seconds: float) -> dict[str, Any]:
    bench = Bench("relay")
    await bench.start()
    try:
        await bench.publisher()
        await asyncio.sleep(1.0)
        i0, i1, _ = await bench.measure(2.0)  # decoding the publisher, nobody watching
        idle = (i1["cpu"] - i0["cpu"]) / (i1["wall"] - i0["wall"])
        await bench.grow(viewers)
        await asyncio.sleep(2.0)
        b0, b1, received = await bench.measure(seconds)
        wall = b1["wall"] - b0["wall"]
        busy = (b1["cpu"] - b0["cpu"]) / wall
        net = max(busy - idle, 1e-9)
        result = {
            "N": viewers, "cpu_idle_pct": round(100 * idle, 1),
            "cpu_busy_pct": round(100 * busy, 1),
            "viewers_recv_pps": round(received / wall),
            "us_per_pkt_per_sub": round(1e6 * net * wall / max(received, 1), 1),
            "pkts_per_core_s": round(received / wall / net),
            "viewers_per_core": round(viewers / net, 1),
        }  # fmt: skip
        print("relay", json.dumps(result), flush=True)
        return result
    finally:
        await bench.close()


async def main(sizes: list[int], seconds: float, relay_viewers: int, profile: bool) -> None:
    t0 = time.monotonic()
    forward = await run_forward(sizes, seconds, profile)
    relay = await run_relay(relay_viewers, seconds)
    print()
    print(f"SFU bench ({time.monotonic() - t0:.0f} s), 1 Mbit/s VP8 + Opus, one node process")
    header = f"{'N':>5} {'us/pkt/sub':>11} {'pkts/s/core':>12} {'viewers/core':>13} {'cpu%':>6}"
    print(header)
    for r in forward:
        print(f"{r['N']:>5} {r['us_per_pkt_per_sub']:>11} {r['pkts_per_core_s']:>12} "
              f"{r['viewers_per_core']:>13} {r['cpu_busy_pct']:>6}")  # fmt: skip
    r = relay
    print(f"{'relay':>5} {r['us_per_pkt_per_sub']:>11} {r['pkts_per_core_s']:>12} "
          f"{r['viewers_per_core']:>13} {r['cpu_busy_pct']:>6}"
          f"  (MediaRelay re-encoding, {r['N']} viewers)")  # fmt: skip
    last = forward[-1]
    if "burst_us_clients_stopped" in last:
        print(f"tight loop over {last['N']} viewers: "
              f"{last['burst_us_clients_running']} us/send with the viewers' process running, "
              f"{last['burst_us_clients_stopped']} us/send with it stopped "
              "(no loopback receiver wake-ups)")  # fmt: skip
    best = max(r["viewers_per_core"] for r in forward)
    if relay["viewers_per_core"]:
        ratio = best / relay["viewers_per_core"]
        print(f"ratio: forwarding serves {ratio:.0f}x more viewers per core than MediaRelay")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,100,200")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--relay-viewers", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="cProfile the SFU at max N")
    parser.add_argument("--serve", choices=["forward", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port))
    else:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        asyncio.run(main(sizes, args.seconds, args.relay_viewers, args.profile))


if __name__ == "__main__":
    cli()
