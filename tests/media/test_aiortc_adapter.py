"""The aiortc hook points this node relies on: fails loudly if an upgrade breaks one."""

import asyncio

import aioice.ice
import aiortc
import pytest
from aiortc import RTCDtlsTransport, RTCRtpSender

from services.media import aiortc_adapter as adapter


def test_pinned_aiortc_has_every_hook() -> None:
    assert aiortc.__version__ == adapter.PINNED_AIORTC, (
        f"aiortc {aiortc.__version__} is not the pinned {adapter.PINNED_AIORTC}: "
        "re-verify services/media/aiortc_adapter.py before changing the pin"
    )
    adapter.check_hooks()


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (RTCDtlsTransport, "_handle_rtp_data"),
        (RTCDtlsTransport, "_send_rtp"),
        (RTCRtpSender, "_handle_rtcp_packet"),
        (RTCRtpSender, "_send_rtcp"),
    ],
)
def test_a_missing_hook_is_reported(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str
) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(adapter.HookError, match=name):
        adapter.check_hooks()


def test_host_addresses_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    adapter.configure_host_addresses(["127.0.0.1", "::1"])
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    assert adapter.ice_servers([]) == []  # never aiortc's public STUN default


async def test_candidates_are_loopback_hosts_only() -> None:
    adapter.configure_host_addresses(["127.0.0.1"])
    pc = adapter.new_peer_connection(adapter.ice_servers([]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [
            line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")
        ]
        assert candidates
        assert all(" 127.0.0.1 " in c and "typ host" in c for c in candidates), candidates
    finally:
        await pc.close()


def test_parse_sdp_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        adapter.parse_sdp("hello")


async def test_candidates_use_the_configured_udp_port_range() -> None:
    adapter.configure_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    original = loop.create_datagram_endpoint
    adapter.use_udp_port_range(41000, 41009)
    pcs = [adapter.new_peer_connection(adapter.ice_servers([])) for _ in range(3)]
    try:
        ports = []
        for pc in pcs:
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            ports += [int(line.split()[5]) for line in pc.localDescription.sdp.splitlines()
                      if line.startswith("a=candidate")]  # fmt: skip
        assert len(ports) == 3 and len(set(ports)) == 3
        assert all(41000 <= p <= 41009 for p in ports), ports
    finally:
        for pc in pcs:
            await pc.close()
        loop.create_datagram_endpoint = original  # type: ignore[method-assign]
