"""The restream service's domain: commands from signaling, outputs, state, events.

State (Redis, so any replica can answer a stop): the hash `restream:{<webinar>}:outputs`
maps each output id to {kind: restream|recording, destination or path, owner, status}.
The replica that runs an output (its `owner`) holds the peer connection and the encoder;
a stop that reaches another replica is forwarded to the owner on
`svc.restream.instance.<owner>.stop`. Each replica keeps `restream:instance:<id>` alive
while it runs; outputs of a replica that is gone are cleared (with their `stopped` event)
the next time the webinar's outputs are read.
"""

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import nats.errors
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter, Gauge

from services.common.events import make_event
from services.common.outbox import Outbox
from services.common.subjects import MEDIA_HEARTBEAT
from services.restream import destinations
from services.restream.outputs import Encoding, Output
from services.restream.settings import RestreamSettings
from services.restream.stage import Stage, StageError

log = logging.getLogger(__name__)
Reply = dict[str, Any]
SOURCE = "/services/restream"
WEBINAR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
OUTPUT_ID = re.compile(r"[0-9a-f]{32}")
HOSTS = ("host", "cohost")
INSTANCE_TTL = 10  # seconds a replica's liveness key lasts without renewal
NODE_SILENCE = 3.0  # a media node without a heartbeat for this long is not chosen

OUTPUTS = Gauge("webinar_restream_outputs", "Outputs running on this replica", ["kind"])
FAILURES = Counter("webinar_restream_failures_total", "Outputs that ended in an error", ["kind"])


def outputs_key(webinar_id: str) -> str:
    return f"restream:{{{webinar_id}}}:outputs"


def instance_key(instance_id: str) -> str:
    return f"restream:instance:{instance_id}"


def origin_key(webinar_id: str) -> str:
    """Signaling's webinar state hash (services/signaling/rooms.py `key(id, "state")`),
    whose `origin` field names the webinar's origin media node."""
    return f"sig:{webinar_id}:state"


def instance_stop_subject(instance_id: str) -> str:
    return f"svc.restream.instance.{instance_id}.stop"


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Running:
    webinar_id: str
    kind: str  # restream | recording
    output: Output
    label: str  # redacted destination, or the file path
    stopping: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # state and event done


class Restreamer:
    def __init__(
        self,
        nc: NATS,
        redis: aioredis.Redis,
        outbox: Outbox,
        settings: RestreamSettings,
        instance_id: str | None = None,
    ) -> None:
        self.nc = nc
        self.redis = redis
        self.outbox = outbox
        self.settings = settings
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.stages: dict[str, Stage] = {}
        self.running: dict[str, Running] = {}
        self.nodes: dict[str, tuple[float, bool]] = {}  # node id -> (last heartbeat, draining)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self.recordings = Path(settings.restream_recordings_dir).absolute()
        s = settings
        self.encoding = Encoding(
            s.restream_width // 2 * 2,
            s.restream_height // 2 * 2,
            s.restream_fps,
            s.restream_video_bitrate,
            s.restream_audio_bitrate,
            s.restream_x264_preset,
            s.restream_keyframe_seconds,
            s.restream_connect_timeout_seconds,
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.redis.set(instance_key(self.instance_id), "1", ex=INSTANCE_TTL)
        await self.nc.subscribe(MEDIA_HEARTBEAT, cb=self._on_heartbeat)
        self._spawn(self._keep_alive())

    async def stop(self) -> None:
        """Finish every output (recordings are closed properly) and leave every stage."""
        for output_id in list(self.running):
            await self._stop_local(output_id)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        for webinar_id in list(self.stages):
            await self.stages.pop(webinar_id).close()
        with contextlib.suppress(Exception):
            await self.redis.delete(instance_key(self.instance_id))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(INSTANCE_TTL / 3)
            try:
                await self.redis.set(instance_key(self.instance_id), "1", ex=INSTANCE_TTL)
            except Exception as exc:  # noqa: BLE001 - Redis away: try again
                log.warning("restream liveness not renewed: %s", exc)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = json.loads(msg.data)
            node_id = str(beat["node_id"])
            if node_id and "." not in node_id and " " not in node_id:
                self.nodes[node_id] = (time.monotonic(), bool(beat.get("draining", False)))
        except (ValueError, KeyError, TypeError):
            return

    # --- commands -----------------------------------------------------------------------

    async def handle(self, op: str, body: Any) -> Reply:
        """A command from signaling: its reply, `{"ok": false, ...}` when refused."""
        try:
            webinar_id, args = self._check(body)
            if op == "restream.start":
                return {"ok": True} | await self.start_restream(webinar_id, args.get("url"))
            if op == "restream.stop":
                return {"ok": True} | await self.stop_output(
                    webinar_id, "restream", args.get("restream_id")
                )
            if op == "recording.start":
                return {"ok": True} | await self.start_recording(webinar_id)
            if op == "recording.stop":
                return {"ok": True} | await self.stop_output(
                    webinar_id, "recording", args.get("recording_id")
                )
            raise CommandError("invalid", f"unknown request {op}")
        except CommandError as exc:
            return {"ok": False, "code": exc.code, "message": exc.message}

    def _check(self, body: Any) -> tuple[str, dict[str, Any]]:
        if not isinstance(body, dict):
            raise CommandError("invalid", "the command is not a JSON object")
        webinar_id = body.get("webinar_id")
        if not isinstance(webinar_id, str) or not WEBINAR_ID.fullmatch(webinar_id):
            raise CommandError("invalid", "webinar_id is missing or malformed")
        participant = body.get("participant")
        if not isinstance(participant, dict):
            raise CommandError("invalid", "participant is missing")
        if participant.get("role") not in HOSTS:
            raise CommandError("forbidden", "only hosts and cohosts restream and record")
        args = body.get("args", {})
        if not isinstance(args, dict):
            raise CommandError("invalid", "args must be an object")
        return webinar_id, args

    async def start_restream(self, webinar_id: str, url: Any) -> Reply:
        try:
            url = destinations.validate(url, self.settings.restream_max_url_length)
        except destinations.InvalidDestination as exc:
            raise CommandError("invalid", str(exc)) from exc
        label = destinations.redact(url)
        output_id = await self._start(webinar_id, "restream", url, "flv", label)
        return {"restream_id": output_id, "destination": label}

    async def start_recording(self, webinar_id: str) -> Reply:
        entries = await self.entries(webinar_id)
        if any(e["kind"] == "recording" for e in entries.values()):
            raise CommandError("conflict", "this webinar is already being recorded")
        output_id = uuid.uuid4().hex
        folder = self.recordings / webinar_id
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError("unavailable", f"recordings folder not writable: {exc}") from exc
        path = str(folder / f"{output_id}.mp4")
        await self._start(webinar_id, "recording", path, "mp4", path, output_id)
        return {"recording_id": output_id, "path": path}

    async def _start(
        self,
        webinar_id: str,
        kind: str,
        target: str,
        fmt: str,
        label: str,
        output_id: str | None = None,
    ) -> str:
        output_id = output_id or uuid.uuid4().hex
        async with self._locks.setdefault(webinar_id, asyncio.Lock()):
            entries = await self.entries(webinar_id)
            restreams = sum(1 for e in entries.values() if e["kind"] == "restream")
            if kind == "restream" and restreams >= self.settings.restream_max_destinations:
                raise CommandError(
                    "conflict",
                    f"at most {self.settings.restream_max_destinations} destinations at once",
                )
            stage = await self._stage(webinar_id)
            entry = {"id": output_id, "kind": kind, "label": label, "owner": self.instance_id,
                     "status": "connecting", "started_at": time.time()}  # fmt: skip
            await self.redis.hset(outputs_key(webinar_id), output_id, json.dumps(entry))

            def notify(phase: str, error: BaseException | None) -> None:
                self._loop.call_soon_threadsafe(self._on_output, output_id, phase, error)

            output = Output(output_id, target, fmt, self.encoding, notify)
            self.running[output_id] = Running(webinar_id, kind, output, label)
            stage.outputs[output_id] = output
            OUTPUTS.labels(kind).set(sum(1 for r in self.running.values() if r.kind == kind))
            output.start()
            if kind == "recording":
                await self._event(webinar_id, "recording.started",
                                  {"recording_id": output_id, "path": label})  # fmt: skip
        log.info("%s %s of %s started to %s", kind, output_id, webinar_id, label)
        return output_id

    async def _stage(self, webinar_id: str) -> Stage:
        stage = self.stages.get(webinar_id)
        if stage is not None:
            return stage
        node_id = await self._origin(webinar_id)
        stage = Stage(self.nc, self.settings, webinar_id, f"restream-{uuid.uuid4().hex[:12]}")
        try:
            await stage.start(node_id)
        except StageError as exc:
            await stage.close()
            raise CommandError("unavailable", str(exc)) from exc
        self.stages[webinar_id] = stage
        return stage

    async def _origin(self, webinar_id: str) -> str:
        """The webinar's origin media node, as signaling chose it; if nobody published yet,
        claim one (the least loaded live node) the way signaling would."""
        origin = await self.redis.hget(origin_key(webinar_id), "origin")
        if origin:
            return str(origin)
        now = time.monotonic()
        live = sorted(n for n, (seen, draining) in self.nodes.items()
                      if now - seen <= NODE_SILENCE and not draining)  # fmt: skip
        if not live:
            raise CommandError("unavailable", "no media node is available, retry shortly")
        await self.redis.hsetnx(origin_key(webinar_id), "origin", live[0])
        return str(await self.redis.hget(origin_key(webinar_id), "origin") or live[0])

    async def entries(self, webinar_id: str) -> dict[str, dict[str, Any]]:
        """The webinar's outputs; those of a replica that is gone are cleared."""
        raw = cast(dict[str, str], await self.redis.hgetall(outputs_key(webinar_id)))
        entries = {k: json.loads(v) for k, v in raw.items()}
        for output_id, entry in list(entries.items()):
            owner = str(entry.get("owner"))
            if owner != self.instance_id and not await self.redis.exists(instance_key(owner)):
                del entries[output_id]
                await self._finish(webinar_id, output_id, entry, "the restream service restarted")
        return entries

    async def stop_output(self, webinar_id: str, kind: str, output_id: Any) -> Reply:
        if not isinstance(output_id, str) or not OUTPUT_ID.fullmatch(output_id):
            entries = await self.entries(webinar_id)
            ids = [k for k, e in entries.items() if e["kind"] == kind]
            if output_id is not None or len(ids) != 1:
                raise CommandError("invalid", f"{kind}_id is missing or malformed")
            output_id = ids[0]
        raw = await self.redis.hget(outputs_key(webinar_id), output_id)
        entry = json.loads(raw) if raw else None
        if entry is None or entry.get("kind") != kind:
            raise CommandError("not_found", f"no such {kind}")
        owner = str(entry["owner"])
        if owner == self.instance_id:
            await self._stop_local(output_id)
        else:
            try:
                await self.nc.request(
                    instance_stop_subject(owner),
                    json.dumps({"output_id": output_id}).encode(),
                    timeout=self.settings.restream_request_timeout_seconds,
                )
            except (nats.errors.Error, TimeoutError):
                await self._finish(webinar_id, output_id, entry, "the restream service restarted")
        key = f"{kind}_id"
        return {key: output_id, "path": entry["label"]} if kind == "recording" else {key: output_id}

    async def stop_forwarded(self, body: Any) -> Reply:
        output_id = body.get("output_id") if isinstance(body, dict) else None
        if isinstance(output_id, str) and output_id in self.running:
            await self._stop_local(output_id)
        return {"ok": True}

    async def _stop_local(self, output_id: str) -> None:
        """Stop an output of this replica and wait (bounded) until its file is complete."""
        running = self.running.get(output_id)
        if running is None:
            return
        running.stopping = True
        running.output.stop()
        await asyncio.to_thread(running.output.join, 15.0)
        # Its "done" callback is queued on the loop; let it finish the bookkeeping.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(running.finished.wait(), 10.0)

    # --- outputs report from their threads ----------------------------------------------

    def _on_output(self, output_id: str, phase: str, error: BaseException | None) -> None:
        running = self.running.get(output_id)
        if running is None:
            return
        if phase == "connected":
            self._spawn(self._connected(output_id, running))
            return
        self.running.pop(output_id, None)
        stage = self.stages.get(running.webinar_id)
        if stage is not None:
            stage.outputs.pop(output_id, None)
        OUTPUTS.labels(running.kind).set(
            sum(1 for r in self.running.values() if r.kind == running.kind)
        )
        reason = None if error is None else describe(error)
        if reason is not None:
            FAILURES.labels(running.kind).inc()
            log.warning("%s %s failed: %s", running.kind, output_id, reason)
        self._spawn(self._done(output_id, running, reason))

    async def _connected(self, output_id: str, running: Running) -> None:
        if running.kind != "restream":
            return
        key = outputs_key(running.webinar_id)
        raw = await self.redis.hget(key, output_id)
        if raw is None:
            return
        entry = json.loads(raw) | {"status": "live"}
        data = {"restream_id": output_id, "destination": running.label, "audience": "hosts"}
        event = make_event("restream.started", running.webinar_id, data, SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, output_id, json.dumps(entry))
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()

    async def _done(self, output_id: str, running: Running, reason: str | None) -> None:
        webinar_id = running.webinar_id
        try:
            raw = await self.redis.hget(outputs_key(webinar_id), output_id)
            if raw is not None:  # else already cleared, its event published
                await self._finish(webinar_id, output_id, json.loads(raw), reason)
            async with self._locks.setdefault(webinar_id, asyncio.Lock()):
                stage = self.stages.get(webinar_id)
                if stage is not None and not stage.outputs:
                    del self.stages[webinar_id]
                    await stage.close()
        finally:
            running.finished.set()

    async def _finish(
        self, webinar_id: str, output_id: str, entry: dict[str, Any], reason: str | None
    ) -> None:
        """Forget the output and publish how it ended, in one transaction."""
        if entry["kind"] == "recording":
            data: dict[str, Any] = {"recording_id": output_id, "path": entry["label"]}
            if reason:
                data["reason"] = reason
            event = make_event("recording.stopped", webinar_id, data, SOURCE)
        else:
            data = {"restream_id": output_id, "destination": entry["label"], "audience": "hosts"}
            failed = reason is not None and reason != "the restream service restarted"
            if reason:
                data["reason"] = reason
            event_type = "restream.failed" if failed else "restream.stopped"
            event = make_event(event_type, webinar_id, data, SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(outputs_key(webinar_id), output_id)
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()

    async def _event(self, webinar_id: str, event_type: str, data: dict[str, Any]) -> None:
        await self.outbox.add(make_event(event_type, webinar_id, data, SOURCE))


def describe(error: BaseException) -> str:
    """A short reason for an event: "connection refused", "timed out", ..."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text)[:200]
