"""Media nodes as seen from signaling: heartbeats, placement, requests, node-down.

Placement (DESIGN.md section 2, CONTRACTS.md "Media nodes"): publishers go to the
webinar's origin node (chosen once and stored in Redis), subscribers to the
least-loaded live node with room. A node whose heartbeat is missing for
`timeout` seconds is down.
"""

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import propagate

from services.common.subjects import MEDIA_HEARTBEAT
from services.signaling.protocol import RequestError

log = logging.getLogger(__name__)


def media_command(node_id: str, op: str) -> str:
    return f"svc.media.{node_id}.{op}"


@dataclass
class Node:
    node_id: str
    subscribers: int
    publishers: int
    capacity: int
    draining: bool
    seen: float

    @property
    def has_room(self) -> bool:
        return not self.draining and self.subscribers < self.capacity


class MediaNodes:
    def __init__(self, nc: NATS, timeout: float, request_timeout: float) -> None:
        self._nc = nc
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.nodes: dict[str, Node] = {}

    async def start(self) -> None:
        await self._nc.subscribe(MEDIA_HEARTBEAT, cb=self._on_heartbeat)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = json.loads(msg.data)
            node_id = str(beat["node_id"])
            if not node_id or "." in node_id or " " in node_id:
                raise ValueError("bad node_id")
            node = Node(node_id, int(beat.get("subscribers", 0)), int(beat.get("publishers", 0)),
                        int(beat.get("capacity", 0)), bool(beat.get("draining", False)),
                        time.monotonic())  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed media heartbeat: %s", exc)
            return
        self.nodes[node_id] = node

    def alive(self, node_id: str | None) -> bool:
        node = self.nodes.get(node_id or "")
        return node is not None and time.monotonic() - node.seen <= self.timeout

    def expired(self) -> list[str]:
        """Nodes that stopped sending heartbeats; forgotten once returned here."""
        now = time.monotonic()
        gone = [n for n, node in self.nodes.items() if now - node.seen > self.timeout]
        for node_id in gone:
            del self.nodes[node_id]
        return gone

    def least_loaded(self) -> str:
        live = [n for n in self.nodes.values() if self.alive(n.node_id) and n.has_room]
        if not live:
            raise RequestError("unavailable", "no media node is available, retry shortly")
        best = min(live, key=lambda n: (n.subscribers / max(n.capacity, 1), n.node_id))
        best.subscribers += 1  # until its next heartbeat says better
        return best.node_id

    def pick_origin(self) -> str:
        live = [n for n in self.nodes.values() if self.alive(n.node_id) and not n.draining]
        if not live:
            raise RequestError("unavailable", "no media node is available, retry shortly")
        best = min(live, key=lambda n: (n.publishers, n.subscribers, n.node_id))
        best.publishers += 1
        return best.node_id

    async def request(self, node_id: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """A command to one node; its reply, or `unavailable`."""
        headers: dict[str, str] = {}
        propagate.inject(headers)  # one trace from the WebSocket to the media node
        try:
            for attempt in range(2):
                try:
                    msg = await self._nc.request(
                        media_command(node_id, op), json.dumps(body).encode(),
                        timeout=self.request_timeout, headers=headers,
                    )  # fmt: skip
                    break
                except nats.errors.NoRespondersError:
                    # A node that just (re)subscribed can miss the first request.
                    if attempt:
                        raise
                    await asyncio.sleep(0.1)
            reply = json.loads(msg.data)
        except (nats.errors.Error, TimeoutError) as exc:
            raise RequestError("unavailable", f"media node {node_id} did not answer") from exc
        except ValueError as exc:
            raise RequestError("unavailable", f"media node {node_id} answered garbage") from exc
        if not isinstance(reply, dict):
            raise RequestError("unavailable", f"media node {node_id} answered garbage")
        if reply.get("ok") is False or "error" in reply:
            code = str(reply.get("code") or reply.get("error") or "unavailable")
            raise RequestError(code, str(reply.get("message") or "media node refused"))
        return reply

    async def tell(self, node_id: str | None, op: str, body: dict[str, Any]) -> None:
        """A command whose answer nobody waits for (leave)."""
        if node_id:
            try:
                await self._nc.publish(media_command(node_id, op), json.dumps(body).encode())
            except nats.errors.Error as exc:
                log.warning("could not tell media node %s to %s: %s", node_id, op, exc)
