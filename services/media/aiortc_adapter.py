"""Every use of aiortc and aioice internals, in one place.

aiortc is the transport (ICE, DTLS, SRTP); it is not an SFU. The node takes over the
packet path at four private hook points of aiortc 1.16 (pinned in pyproject.toml):

- `RTCDtlsTransport._handle_rtp_data` on publisher connections: decrypted RTP in,
  before aiortc's receiver (no jitter buffer, no depacketizer, no decoder);
- `RTCDtlsTransport._handle_rtcp_data` on publisher connections, wrapped: the
  publisher's sender reports, then aiortc's own handling;
- `RTCDtlsTransport._send_rtp` on subscriber connections: RTP/RTCP out, SRTP applied;
- `RTCRtpSender._handle_rtcp_packet` on subscriber senders: PLI/FIR/NACK/REMB in, and
  `RTCRtpSender._send_rtcp`: aiortc's periodic SR (zero timestamps, since it never
  sends media itself) is replaced by the leg's own.

plus `aioice.ice.get_host_addresses`, which skips 127.0.0.1 and is the only way to
choose the host candidates. `check_hooks()` verifies all of them; the node calls it at
start and tests/media/test_aiortc_adapter.py fails loudly if an upgrade breaks one.
"""

import asyncio
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc
import aiortc.rtcicetransport
import pylibsrtp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDtlsTransport,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from services.media.forwarding.codecs import Codec
from services.media.forwarding.forwarder import Leg
from services.media.forwarding.rtp import is_rtcp

log = logging.getLogger(__name__)

PINNED_AIORTC = "1.16.0"


class HookError(RuntimeError):
    """aiortc no longer has a hook point this node relies on."""


def check_hooks() -> None:
    """Raise HookError unless every private hook point exists with the expected shape."""
    expected: list[tuple[type | Any, str, list[str]]] = [
        (RTCDtlsTransport, "_handle_rtp_data", ["self", "data", "arrival_time_ms"]),
        (RTCDtlsTransport, "_handle_rtcp_data", ["self", "data"]),
        (RTCDtlsTransport, "_send_rtp", ["self", "data"]),
        (RTCRtpSender, "_handle_rtcp_packet", ["self", "packet"]),
        (RTCRtpSender, "_send_rtcp", ["self", "packets"]),
        (RTCRtpSender, "_run_rtp", ["self", "codec"]),
        (aioice.ice, "get_host_addresses", ["use_ipv4", "use_ipv6"]),
    ]
    problems: list[str] = []
    # attributes the fast send path reads on live objects
    for owner, attrs in (
        (RTCDtlsTransport.__init__, ("self._tx_srtp", "self._state")),
        (aioice.ice.Connection.__init__, ("self._nominated",)),
        (aiortc.rtcicetransport.RTCIceTransport.__init__, ("self._connection",)),
    ):
        text = inspect.getsource(owner)
        problems += [f"{owner.__qualname__} no longer sets {a}" for a in attrs if a not in text]
    if not hasattr(aioice.ice, "StunProtocol") or not hasattr(DtlsState, "CONNECTED"):
        problems.append("aioice.ice.StunProtocol or RTCDtlsTransport State.CONNECTED is gone")
    for owner, name, params in expected:
        fn = getattr(owner, name, None)
        if fn is None:
            problems.append(f"{getattr(owner, '__name__', owner)}.{name} is gone")
            continue
        got = list(inspect.signature(fn).parameters)
        if got != params:
            problems.append(f"{getattr(owner, '__name__', owner)}.{name}{got} != {params}")
        elif name != "get_host_addresses" and not inspect.iscoroutinefunction(fn):
            problems.append(f"{name} is no longer a coroutine function")
    if problems:
        raise HookError(
            f"aiortc {aiortc.__version__} (pinned {PINNED_AIORTC}) broke the SFU hooks: "
            + "; ".join(problems)
        )


# --- ICE --------------------------------------------------------------------------------


def configure_host_addresses(addresses: list[str]) -> None:
    """Gather host candidates on exactly these addresses (aioice skips 127.0.0.1).

    Process-wide: aioice reads it as a module-level function.
    """
    chosen = [a.strip() for a in addresses if a.strip()]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def use_udp_port_range(low: int, high: int) -> None:
    """Bind ICE host candidates to ports low..high (firewalls, host networking).

    aioice binds each host candidate with `create_datagram_endpoint(local_addr=(addr,
    0))`; this wraps the running loop's method so port 0 becomes the next free port of
    the range. Only UDP endpoints asking for port 0 are affected (ICE, in a media node).
    """
    if not low or not high:
        return
    loop = asyncio.get_running_loop()
    original = loop.create_datagram_endpoint
    ports = itertools.cycle(range(low, high + 1))
    size = high - low + 1

    async def create(factory: Any, local_addr: Any = None, **kwargs: Any) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await original(factory, local_addr=local_addr, **kwargs)
        for _ in range(size):
            try:
                return await original(factory, local_addr=(local_addr[0], next(ports)), **kwargs)
            except OSError:
                continue
        raise OSError(f"no free UDP port in {low}-{high}")

    loop.create_datagram_endpoint = create  # type: ignore[method-assign, assignment]


def ice_servers(urls: list[str], username: str = "", credential: str = "") -> list[RTCIceServer]:
    """ICE servers from settings; empty means none (never aiortc's public STUN default)."""
    return [
        RTCIceServer(urls=u, username=username or None, credential=credential or None)
        for u in urls
        if u.strip()
    ]


def new_peer_connection(servers: list[RTCIceServer]) -> RTCPeerConnection:
    """max-bundle: with aiortc's default (balanced), an offer with several m-lines of one
    kind in one BUNDLE group leaves the third and later ones on an orphan transport
    without candidates, and the viewer never registers their receivers."""
    return RTCPeerConnection(
        RTCConfiguration(iceServers=list(servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


class NeverTrack(MediaStreamTrack):
    """A track that never yields: its RTCRtpSender never encodes nor polls."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()


# --- SDP --------------------------------------------------------------------------------


@dataclass
class MediaSection:
    kind: str  # audio | video (as in the SDP)
    mid: str | None
    direction: str | None
    codecs: list[Codec]
    extensions: dict[str, int]
    ssrcs: list[int]
    cname: str | None = None


def parse_sdp(sdp: str) -> list[MediaSection]:
    """The media sections of an SDP; raises ValueError if it does not parse."""
    if not isinstance(sdp, str) or "m=" not in sdp:
        raise ValueError("SDP has no media section")
    try:
        session = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises anything on garbage
        raise ValueError(f"SDP does not parse: {exc}") from exc
    out: list[MediaSection] = []
    for m in session.media:
        if m.kind not in ("audio", "video"):
            continue
        codecs = [
            Codec(
                name=c.name,
                clock_rate=c.clockRate,
                payload_type=int(c.payloadType or 0),
                channels=c.channels,
                params={str(k): str(v) for k, v in c.parameters.items()},
            )
            for c in m.rtp.codecs
        ]
        exts = {e.uri: e.id for e in m.rtp.headerExtensions}
        cname = next((s.cname for s in m.ssrc if s.cname), None)
        out.append(
            MediaSection(
                m.kind, m.rtp.muxId, m.direction, codecs, exts, [s.ssrc for s in m.ssrc], cname
            )
        )
    return out


async def answer(pc: RTCPeerConnection, offer_sdp: str, prepare: Callable[[], None]) -> str:
    """Apply a remote offer, let `prepare` set up transceivers, return the answer SDP."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    except (ValueError, KeyError, IndexError, TypeError, AssertionError) as exc:
        raise ValueError(f"offer rejected: {exc}") from exc
    prepare()
    await pc.setLocalDescription(await pc.createAnswer())
    return str(pc.localDescription.sdp)


def transports(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    seen: list[RTCDtlsTransport] = []
    for t in pc.getTransceivers():
        dtls = t.receiver.transport
        if dtls is not None and dtls not in seen:
            seen.append(dtls)
    return seen


# --- publisher connections --------------------------------------------------------------

RtpIn = Callable[[bytes], Awaitable[None]]
RtcpIn = Callable[[bytes], None]


def hook_publisher(dtls: RTCDtlsTransport, on_rtp: RtpIn, on_rtcp: RtcpIn) -> None:
    """Take decrypted RTP before aiortc's receiver; observe RTCP, then pass it on."""
    original_rtcp = dtls._handle_rtcp_data

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        await on_rtp(data)

    async def handle_rtcp_data(data: bytes) -> None:
        on_rtcp(data)
        await original_rtcp(data)

    dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]


def fast_sender(dtls: RTCDtlsTransport) -> Callable[[bytes], None]:
    """Send RTP/RTCP synchronously: SRTP protect, then `sendto` on the nominated ICE
    pair's socket (what `_send_rtp` does through three coroutines). Over a TURN relay
    it falls back to aiortc's own path."""
    fallback = rtp_sender(dtls)
    tasks: set[asyncio.Future[None]] = set()

    def send(data: bytes) -> None:
        if dtls._state is not DtlsState.CONNECTED:
            return
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return
        protocol = pair.protocol
        if type(protocol) is aioice.ice.StunProtocol and protocol.transport is not None:
            srtp = dtls._tx_srtp
            try:
                protected = srtp.protect_rtcp(data) if is_rtcp(data) else srtp.protect(data)
                protocol.transport.sendto(protected, pair.remote_addr)
            except (pylibsrtp.Error, OSError) as exc:  # one bad packet, not a dead leg
                log.debug("send failed: %s", exc)
        else:
            task = asyncio.ensure_future(fallback(data))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return send


def rtp_sender(dtls: RTCDtlsTransport) -> Callable[[bytes], Awaitable[None]]:
    """Send RTP or RTCP bytes over the connection (SRTP applied); silently nothing
    while it is not connected."""
    send_rtp = dtls._send_rtp

    async def send(data: bytes) -> None:
        try:
            await send_rtp(data)
        except ConnectionError:
            pass

    return send


# --- subscriber connections -------------------------------------------------------------


def hook_subscriber_sender(
    sender: RTCRtpSender, leg: Leg, send: Callable[[bytes], Awaitable[None]]
) -> None:
    """Feedback from the viewer goes to the leg; aiortc's SR is replaced by the leg's."""

    async def handle_rtcp_packet(packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            await leg.on_nack(list(packet.lost))
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                leg.on_keyframe_request()
            elif packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return
                leg.on_remb(bitrate // max(1, len(ssrcs)))  # the viewer's total, shared

    async def send_rtcp(packets: list[Any]) -> None:
        payload = b""
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                report = leg.sender_report()
                if report is None:
                    return  # nothing true to report yet
                payload += report
            elif isinstance(packet, RtcpByePacket):
                payload += bytes(packet)
            else:
                payload += bytes(packet)
        if payload:
            await send(payload)

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
    sender._send_rtcp = send_rtcp  # type: ignore[method-assign]


def sender_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC aiortc advertised for this sender in the answer's a=ssrc."""
    return int(sender._ssrc)
