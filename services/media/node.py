"""A media node: webinars (rooms), their publishers, subscribers and slots.

This is the room logic above the forwarding core. It speaks aiortc through the
adapter and other nodes through a `Bus` (NATS in production, see service.py); it
knows nothing of the request-reply API itself.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCRtpTransceiver

from services.common.subjects import media_relay, media_relay_pli
from services.media import aiortc_adapter as adapter
from services.media.forwarding import rtcp
from services.media.forwarding.codecs import Codec
from services.media.forwarding.forwarder import Leg, Source, Uplink
from services.media.forwarding.rtp import ExtensionMap, is_rtcp
from services.media.forwarding.slots import SlotMap, Track, track_id_for
from services.media.settings import MediaSettings

log = logging.getLogger("media.node")

EDGE_LEASE = 6.0  # an origin relays to an edge this long after its last attach
EDGE_RENEW = 2.0


def slots_subject(webinar_id: str) -> str:
    """Where an origin tells edges about slot changes (internal)."""
    return f"svc.media.slots.{webinar_id}"


def attach_subject(node_id: str) -> str:
    """Edge -> origin request: relay this webinar's tracks to me (internal)."""
    return f"svc.media.{node_id}.relay.attach"


class MediaError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


MessageHandler = Callable[[str, bytes], Awaitable[None]]


class Bus(Protocol):
    async def request(self, subject: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    async def publish(self, subject: str, data: bytes) -> None: ...

    async def subscribe(
        self, subject: str, handler: MessageHandler
    ) -> Callable[[], Awaitable[None]]: ...


SlotsChanged = Callable[[str, dict[str, dict[str, str] | None]], Awaitable[None]]


@dataclass
class Publisher:
    participant_id: str
    pc: RTCPeerConnection
    uplink: Uplink
    send: Callable[[bytes], Awaitable[None]]
    sources: dict[str, Source]  # kind -> source


@dataclass
class Subscriber:
    participant_id: str
    pc: RTCPeerConnection
    legs: list[Leg | None]  # by slot index
    connected: bool = False


@dataclass
class Room:
    webinar_id: str
    origin_node: str
    slots: SlotMap
    is_edge: bool = False
    publishers: dict[str, Publisher] = field(default_factory=dict)
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)  # by track id
    tracks: dict[str, Track] = field(default_factory=dict)
    live: list[str] = field(default_factory=list)  # track ids in stage order
    edges: dict[str, float] = field(default_factory=dict)  # node id -> lease expiry
    unsubscribe: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    last_attach: float = 0.0


class MediaNode:
    def __init__(
        self,
        settings: MediaSettings,
        bus: Bus | None = None,
        on_slots_changed: SlotsChanged | None = None,
    ) -> None:
        self.settings = settings
        self.node_id = settings.media_node_id
        self.bus = bus
        self.on_slots_changed = on_slots_changed
        self.rooms: dict[str, Room] = {}
        self.draining = False
        self._ice = adapter.ice_servers(
            settings.ice_server_urls, settings.media_ice_username, settings.media_ice_credential
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._pli_unsub: Callable[[], Awaitable[None]] | None = None
        self.stats = {"keyframe_requests": 0, "nacks": 0, "retransmitted": 0}

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        adapter.check_hooks()
        adapter.configure_host_addresses(self.settings.ice_hosts)
        adapter.use_udp_port_range(
            self.settings.media_udp_port_min, self.settings.media_udp_port_max
        )
        self._loop_task = asyncio.create_task(self._run(), name=f"media-{self.node_id}")
        if self.bus is not None:
            self._pli_unsub = await self.bus.subscribe("svc.media.relay.*.*.pli", self._on_pli)

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for room in list(self.rooms.values()):
            await self._close_room(room)
        if self._pli_unsub is not None:
            await self._pli_unsub()
        for task in list(self._tasks):
            task.cancel()

    def load(self) -> dict[str, int]:
        return {
            "subscribers": sum(len(r.subscribers) for r in self.rooms.values()),
            "publishers": sum(len(r.publishers) for r in self.rooms.values()),
        }

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _room(self, webinar_id: str, origin_node: str | None = None) -> Room:
        room = self.rooms.get(webinar_id)
        if room is None:
            s = self.settings
            origin = origin_node or self.node_id
            room = Room(
                webinar_id,
                origin,
                SlotMap(s.media_slots_audio, s.media_slots_video, s.media_slots_screen),
                is_edge=origin != self.node_id,
            )
            self.rooms[webinar_id] = room
        return room

    def _new_pc(self) -> RTCPeerConnection:
        return adapter.new_peer_connection(self._ice)

    # --- publish ----------------------------------------------------------------------

    async def publish(self, webinar_id: str, participant_id: str, sdp: str) -> str:
        offer = _parse(sdp)
        if not any(m.direction in ("sendrecv", "sendonly") for m in offer):
            raise MediaError("invalid", "the offer sends no media")
        room = self._room(webinar_id)
        if room.is_edge:
            # Signaling sends publishers to the webinar's origin only: this edge's origin
            # went down and signaling made this node the new one.
            await self._repoint(room, self.node_id)
        await self.unpublish(webinar_id, participant_id)
        pc = self._new_pc()
        try:
            answer_sdp = await adapter.answer(pc, sdp, lambda: None)
        except ValueError as exc:
            await pc.close()
            raise MediaError("invalid", str(exc)) from exc
        answer = adapter.parse_sdp(answer_sdp)
        exts: dict[str, int] = {}
        for m in answer:
            exts.update(m.extensions)
        uplink = Uplink(ExtensionMap(exts))
        dtls_list = adapter.transports(pc)
        send = adapter.rtp_sender(dtls_list[0])
        sources: dict[str, Source] = {}
        video_seen = 0
        for offered, agreed in zip(offer, answer, strict=False):
            if offered.direction not in ("sendrecv", "sendonly"):
                continue
            if offered.kind == "audio":
                if "audio" in sources:
                    continue
                kind = "audio"
            else:
                kind = "video" if video_seen == 0 else "screen"
                video_seen += 1
                if video_seen > 2:
                    continue
            track = Track(track_id_for(participant_id, kind), participant_id, kind)
            source = Source(
                track.track_id,
                kind,
                agreed.codecs,  # with RTX: retransmissions we ask for come back as RTX
                ExtensionMap(agreed.extensions),
                history_size=self.settings.media_history_size,
                keyframe_interval=self.settings.media_keyframe_interval,
                on_keyframe_request=self._publisher_pli(uplink, send),
                on_loss=self._publisher_nack(uplink, send),
                on_first_packet=self._live_callback(room),
            )
            if room.edges:
                source.relay = self._relay_out(room, source)
            uplink.add(source, ssrcs=offered.ssrcs, mid=agreed.mid)
            sources[kind] = source
            room.sources[track.track_id] = source
            room.tracks[track.track_id] = track
        publisher = Publisher(participant_id, pc, uplink, send, sources)
        room.publishers[participant_id] = publisher

        def on_rtcp(data: bytes) -> None:
            uplink.on_rtcp(data)
            if room.edges:
                self._relay_reports(room, uplink, data)

        for dtls in dtls_list:
            adapter.hook_publisher(dtls, uplink.on_rtp, on_rtcp)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                current = room.publishers.get(participant_id)
                if current is publisher:
                    self._spawn(self.unpublish(webinar_id, participant_id))

        log.info("publisher %s in %s: %s", participant_id, webinar_id, sorted(sources))
        return answer_sdp

    def _publisher_pli(
        self, uplink: Uplink, send: Callable[[bytes], Awaitable[None]]
    ) -> Callable[[Source], None]:
        def request(source: Source) -> None:
            if source.ssrc is not None:  # the PLI names this track's own (video) SSRC
                self.stats["keyframe_requests"] += 1
                self._spawn(send(rtcp.build_pli(uplink.feedback_ssrc, source.ssrc)))

        return request

    def _publisher_nack(
        self, uplink: Uplink, send: Callable[[bytes], Awaitable[None]]
    ) -> Callable[[Source, list[int]], None]:
        def request(source: Source, lost: list[int]) -> None:
            if source.ssrc is not None:
                self._spawn(send(rtcp.build_nack(uplink.feedback_ssrc, source.ssrc, lost)))

        return request

    def _live_callback(self, room: Room) -> Callable[[Source], None]:
        return lambda source: self._on_live(room, source)

    def _on_live(self, room: Room, source: Source) -> None:
        if source.track_id in room.tracks and source.track_id not in room.live:
            room.live.append(source.track_id)
            self._refresh_slots(room)

    async def unpublish(self, webinar_id: str, participant_id: str) -> bool:
        room = self.rooms.get(webinar_id)
        publisher = room.publishers.pop(participant_id, None) if room else None
        if room is None or publisher is None:
            return False
        for source in publisher.sources.values():
            room.sources.pop(source.track_id, None)
            room.tracks.pop(source.track_id, None)
            if source.track_id in room.live:
                room.live.remove(source.track_id)
            for leg in list(source.legs):
                leg.detach()
        self._refresh_slots(room)
        await publisher.pc.close()
        self._maybe_drop_room(room)
        return True

    async def mute(self, webinar_id: str, participant_id: str, kind: str, muted: bool) -> None:
        room = self.rooms.get(webinar_id)
        publisher = room.publishers.get(participant_id) if room else None
        if publisher is None:
            raise MediaError("not_found", f"{participant_id} publishes nothing on this node")
        source = publisher.sources.get(kind)
        if source is None:
            raise MediaError("not_found", f"{participant_id} publishes no {kind}")
        source.set_muted(muted)

    async def leave(self, webinar_id: str, participant_id: str) -> None:
        await self.unpublish(webinar_id, participant_id)
        room = self.rooms.get(webinar_id)
        if room is not None:
            subscriber = room.subscribers.pop(participant_id, None)
            if subscriber is not None:
                await self._close_subscriber(subscriber)
            self._maybe_drop_room(room)

    # --- subscribe --------------------------------------------------------------------

    async def subscribe(
        self, webinar_id: str, participant_id: str, sdp: str, origin_node: str | None = None
    ) -> str:
        offer = _parse(sdp)
        if not any(m.direction in ("recvonly", "sendrecv") for m in offer):
            raise MediaError("invalid", "the offer receives no media")
        existing = self.rooms.get(webinar_id)
        if existing is not None and existing.is_edge and origin_node == self.node_id:
            await self._repoint(existing, self.node_id)  # the old origin went down
        if origin_node == self.node_id:
            origin_node = None
        if existing is not None and origin_node and existing.origin_node != origin_node:
            if not existing.is_edge:
                origin_node = None  # this node is the origin; signaling's view is stale
            else:
                await self._repoint(existing, origin_node)  # the old origin went down
        room = self._room(webinar_id, origin_node)
        if room.is_edge and not room.unsubscribe:
            try:
                await self._attach_edge(room)
            except Exception as exc:
                await self._close_room(room)
                raise MediaError("unavailable", f"origin {room.origin_node}: {exc}") from exc
        old = room.subscribers.pop(participant_id, None)
        if old is not None:
            await self._close_subscriber(old)
        pc = self._new_pc()
        placed: list[tuple[RTCRtpTransceiver, int]] = []

        def prepare() -> None:
            kinds = room.slots.kinds
            audio_slots = [i for i, k in enumerate(kinds) if k == "audio"]
            video_slots = [i for i, k in enumerate(kinds) if k != "audio"]
            for t in pc.getTransceivers():
                pool = audio_slots if t.kind == "audio" else video_slots
                if not pool:
                    continue
                t.sender.replaceTrack(adapter.NeverTrack(t.kind))
                t.direction = "sendonly"
                placed.append((t, pool.pop(0)))

        try:
            answer_sdp = await adapter.answer(pc, sdp, prepare)
        except ValueError as exc:
            await pc.close()
            raise MediaError("invalid", str(exc)) from exc
        sections = adapter.parse_sdp(answer_sdp)
        legs: list[Leg | None] = [None] * len(room.slots.kinds)
        transceivers = pc.getTransceivers()
        dtls = adapter.transports(pc)[0]
        send = adapter.rtp_sender(dtls)
        send_now = adapter.fast_sender(dtls)
        for t, slot in placed:
            section = sections[transceivers.index(t)]
            leg = Leg(
                adapter.sender_ssrc(t.sender),
                t.kind,
                [c for c in section.codecs if not c.is_rtx],
                ExtensionMap(section.extensions),
                send,
                mid=section.mid,
                send_now=send_now,
            )
            adapter.hook_subscriber_sender(t.sender, leg, send)
            legs[slot] = leg
        subscriber = Subscriber(participant_id, pc, legs)
        room.subscribers[participant_id] = subscriber

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and not subscriber.connected:
                subscriber.connected = True
                for i, leg in enumerate(subscriber.legs):
                    if leg is not None:
                        leg.attach(self._slot_source(room, i))
            elif pc.connectionState in ("failed", "closed"):
                if room.subscribers.get(participant_id) is subscriber:
                    self._spawn(self.leave_subscriber(webinar_id, participant_id))

        log.info("subscriber %s in %s (%d slots)", participant_id, webinar_id, len(placed))
        return answer_sdp

    async def _repoint(self, room: Room, origin_node: str) -> None:
        """Signaling moved the webinar's origin (the old one went down): forget the old
        origin's tracks and slots; as the new origin this node takes the publishers, as
        an edge it attaches to the new origin on the next subscribe."""
        log.warning("%s: origin %s -> %s", room.webinar_id, room.origin_node, origin_node)
        for unsubscribe in room.unsubscribe:
            with contextlib.suppress(Exception):
                await unsubscribe()
        room.unsubscribe = []
        for source in room.sources.values():
            for leg in list(source.legs):
                leg.detach()
        room.sources.clear()
        room.tracks.clear()
        room.live.clear()
        room.origin_node = origin_node
        room.is_edge = origin_node != self.node_id
        if room.is_edge:
            self._apply_slots(room, room.slots.assign([]))
        else:
            self._refresh_slots(room)  # empty until the speakers publish here

    async def leave_subscriber(self, webinar_id: str, participant_id: str) -> None:
        room = self.rooms.get(webinar_id)
        if room is None:
            return
        subscriber = room.subscribers.pop(participant_id, None)
        if subscriber is not None:
            await self._close_subscriber(subscriber)
        self._maybe_drop_room(room)

    async def _close_subscriber(self, subscriber: Subscriber) -> None:
        for leg in subscriber.legs:
            if leg is not None:
                self.stats["nacks"] += leg.nacks
                self.stats["retransmitted"] += leg.retransmitted
                leg.detach()
        await subscriber.pc.close()

    def _slot_source(self, room: Room, index: int) -> Source | None:
        track = room.slots.slots[index]
        return room.sources.get(track.track_id) if track is not None else None

    # --- slots ------------------------------------------------------------------------

    def _refresh_slots(self, room: Room) -> None:
        if room.is_edge:
            return
        tracks = [room.tracks[t] for t in room.live if t in room.tracks]
        changed = room.slots.assign(tracks)
        if not changed:
            return
        self._apply_slots(room, changed)
        if self.on_slots_changed is not None:
            self._spawn(self.on_slots_changed(room.webinar_id, room.slots.to_public()))
        if self.bus is not None and room.edges:
            payload = json.dumps(self._descriptor(room)).encode()
            self._spawn(self.bus.publish(slots_subject(room.webinar_id), payload))

    def _apply_slots(self, room: Room, changed: list[int]) -> None:
        for subscriber in room.subscribers.values():
            if not subscriber.connected:
                continue
            for i in changed:
                leg = subscriber.legs[i]
                if leg is not None:
                    leg.attach(self._slot_source(room, i))

    def slot_map(self, webinar_id: str) -> dict[str, dict[str, str] | None]:
        room = self.rooms.get(webinar_id)
        if room is None:
            s = self.settings
            return SlotMap(
                s.media_slots_audio, s.media_slots_video, s.media_slots_screen
            ).to_public()
        return room.slots.to_public()

    # --- relay between nodes: origin side ---------------------------------------------

    def _descriptor(self, room: Room) -> dict[str, Any]:
        slots: list[dict[str, Any] | None] = []
        for track in room.slots.slots:
            source = room.sources.get(track.track_id) if track is not None else None
            if track is None or source is None:
                slots.append(None)
                continue
            slots.append(
                {
                    "track_id": track.track_id,
                    "participant_id": track.participant_id,
                    "kind": track.kind,
                    "codecs": [c.to_json() for c in source.codecs.values()],
                    "extensions": source.extensions.by_uri,
                }
            )
        return {"webinar_id": room.webinar_id, "origin_node": self.node_id, "slots": slots}

    async def relay_attach(self, webinar_id: str, node_id: str) -> dict[str, Any]:
        """An edge asks for this webinar's tracks; relay them for EDGE_LEASE seconds."""
        room = self.rooms.get(webinar_id)
        if room is None or room.is_edge:
            room = self._room(webinar_id)
            if room.is_edge:
                raise MediaError("not_found", f"{webinar_id} has no origin here")
        first = not room.edges
        room.edges[node_id] = time.monotonic() + EDGE_LEASE
        if first:
            for source in room.sources.values():
                source.relay = self._relay_out(room, source)
                source.request_keyframe(force=True)
        return self._descriptor(room)

    def _relay_out(self, room: Room, source: Source) -> Callable[[bytes], Awaitable[None]]:
        subject = media_relay(room.webinar_id, source.track_id)
        bus = self.bus

        async def relay(data: bytes) -> None:
            if bus is not None:
                await bus.publish(subject, data)

        return relay

    def _relay_reports(self, room: Room, uplink: Uplink, data: bytes) -> None:
        if self.bus is None:
            return
        for packet in rtcp.parse_compound(data):
            if packet.packet_type != rtcp.SR or len(packet.body) < 24:
                continue
            source = uplink.by_ssrc.get(packet.sender_ssrc)
            if source is not None and not source.muted:
                report = rtcp.build_sr(packet.sender_ssrc, rtcp.parse_sender_info(packet))
                subject = media_relay(room.webinar_id, source.track_id)
                self._spawn(self.bus.publish(subject, report))

    async def _on_pli(self, subject: str, data: bytes) -> None:
        parts = subject.split(".")
        if len(parts) != 6:
            return
        webinar_id, track_id = parts[3], parts[4]
        room = self.rooms.get(webinar_id)
        if room is None or room.is_edge:
            return
        source = room.sources.get(track_id)
        if source is not None:
            source.request_keyframe()

    # --- relay between nodes: edge side -----------------------------------------------

    async def _attach_edge(self, room: Room) -> None:
        assert self.bus is not None, "a node without a bus cannot relay"
        relay_sub = await self.bus.subscribe(
            f"svc.media.relay.{room.webinar_id}.*", lambda s, d: self._on_relayed(room, s, d)
        )
        slots_sub = await self.bus.subscribe(
            slots_subject(room.webinar_id), lambda s, d: self._on_slots_update(room, d)
        )
        room.unsubscribe = [relay_sub, slots_sub]
        await self._renew_edge(room)

    async def _renew_edge(self, room: Room) -> None:
        assert self.bus is not None
        reply = await self.bus.request(
            attach_subject(room.origin_node),
            {"webinar_id": room.webinar_id, "node_id": self.node_id},
        )
        if not reply.get("ok"):
            raise MediaError("unavailable", f"origin {room.origin_node}: {reply.get('message')}")
        room.last_attach = time.monotonic()
        self._apply_descriptor(room, reply)

    async def _on_slots_update(self, room: Room, data: bytes) -> None:
        self._apply_descriptor(room, json.loads(data))

    def _apply_descriptor(self, room: Room, descriptor: dict[str, Any]) -> None:
        changed: list[int] = []
        wanted: set[str] = set()
        for i, entry in enumerate(descriptor.get("slots", [])[: len(room.slots.slots)]):
            track: Track | None = None
            if entry is not None:
                track = Track(entry["track_id"], entry["participant_id"], entry["kind"])
                wanted.add(track.track_id)
                if track.track_id not in room.sources:
                    room.sources[track.track_id] = Source(
                        track.track_id,
                        track.kind,
                        [Codec.from_json(c) for c in entry["codecs"]],
                        ExtensionMap(entry.get("extensions") or {}),
                        history_size=self.settings.media_history_size,
                        keyframe_interval=self.settings.media_keyframe_interval,
                        on_keyframe_request=self._upstream_pli(room),
                    )
                    room.tracks[track.track_id] = track
            if room.slots.slots[i] != track:
                room.slots.slots[i] = track
                changed.append(i)
        for track_id in [t for t in room.sources if t not in wanted]:
            room.sources.pop(track_id)
            room.tracks.pop(track_id, None)
        if changed:
            self._apply_slots(room, changed)

    def _upstream_pli(self, room: Room) -> Callable[[Source], None]:
        def request(source: Source) -> None:
            if self.bus is not None:
                subject = media_relay_pli(room.webinar_id, source.track_id)
                self._spawn(self.bus.publish(subject, b""))

        return request

    async def _on_relayed(self, room: Room, subject: str, data: bytes) -> None:
        source = room.sources.get(subject.rsplit(".", 1)[-1])
        if source is None or not data:
            return
        if is_rtcp(data):
            for packet in rtcp.parse_compound(data):
                if packet.packet_type == rtcp.SR and len(packet.body) >= 24:
                    source.on_sender_report(rtcp.parse_sender_info(packet))
        else:
            await source.on_rtp(data)

    # --- housekeeping -----------------------------------------------------------------

    def _maybe_drop_room(self, room: Room) -> None:
        if room.publishers or room.subscribers or room.edges:
            return
        if self.rooms.get(room.webinar_id) is room:
            del self.rooms[room.webinar_id]
            self._spawn(self._close_room(room))

    async def _close_room(self, room: Room) -> None:
        self.rooms.pop(room.webinar_id, None)
        for unsubscribe in room.unsubscribe:
            with contextlib.suppress(Exception):
                await unsubscribe()
        room.unsubscribe = []
        for publisher in list(room.publishers.values()):
            await publisher.pc.close()
        for subscriber in list(room.subscribers.values()):
            await subscriber.pc.close()
        room.publishers.clear()
        room.subscribers.clear()

    async def _run(self) -> None:
        """Once a second: RR + REMB to publishers, edge leases and renewals."""
        s = self.settings
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for room in list(self.rooms.values()):
                try:
                    for publisher in list(room.publishers.values()):
                        if publisher.pc.connectionState == "connected":
                            feedback = publisher.uplink.feedback(
                                s.media_remb_floor, s.media_remb_cap
                            )
                            await publisher.send(feedback)
                    if room.edges:
                        for node_id, expiry in list(room.edges.items()):
                            if expiry < now:
                                del room.edges[node_id]
                        if not room.edges:
                            for source in room.sources.values():
                                source.relay = None
                            self._maybe_drop_room(room)
                    if room.is_edge and room.subscribers and now - room.last_attach > EDGE_RENEW:
                        await self._renew_edge(room)
                except Exception:  # one room's trouble must not stop the rest
                    log.exception("housekeeping of %s failed", room.webinar_id)


def _parse(sdp: Any) -> list[adapter.MediaSection]:
    if not isinstance(sdp, str) or len(sdp) > 64 * 1024:
        raise MediaError("invalid", "sdp must be a string of at most 64 KiB")
    try:
        return adapter.parse_sdp(sdp)
    except ValueError as exc:
        raise MediaError("invalid", str(exc)) from exc
