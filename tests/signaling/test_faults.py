"""NATS or Redis restarting: clients stay connected and the room state survives."""

import asyncio

import httpx
import pytest

from tests.infra import NatsServer, RedisServer
from tests.registry.conftest import registry_settings
from tests.signaling.conftest import OFFER, Stack, ThreadedServer, create_registry, running_stack


@pytest.fixture
async def own_stack(keypair):
    """A stack on its own NATS and Redis, which the test may restart."""
    nats_srv, redis_srv = NatsServer(), RedisServer()
    nats_srv.start()
    redis_srv.start()
    registry = ThreadedServer(create_registry(registry_settings(nats_srv.url, redis_srv.url,
                                                                keypair)))  # fmt: skip
    registry.start()
    try:
        async with running_stack(nats_srv.url, redis_srv.url, keypair, registry.url) as stack:
            yield stack, nats_srv, redis_srv
    finally:
        nats_srv.stop()
        redis_srv.stop()
        registry.stop()


async def test_health_and_metrics(stack: Stack):
    async with httpx.AsyncClient(base_url=stack.replicas[0]) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["checks"] == {"nats": True,
                                                                         "redis": True}  # fmt: skip
        room = await stack.webinar()
        await room.join("host")
        metrics = (await http.get("/metrics")).text
        assert "webinar_signaling_connections" in metrics
        assert 'webinar_signaling_joins_total{outcome="ok"}' in metrics


async def test_redis_restart_keeps_clients_and_room_state(own_stack):
    stack, _, redis_srv = own_stack
    room = await stack.webinar()
    host = await room.started(replica=0)
    attendee = await room.join("attendee", replica=1, pid="a_keep")
    await room.join("panelist", replica=1, pid="p_keep")
    redis_srv.stop()
    reply = await attendee.request("hand.raise", within=15)
    assert reply["type"] == "error" and reply["code"] == "unavailable"
    await attendee.ok("ping")
    redis_srv.start()
    await asyncio.sleep(0.5)
    assert (await attendee.ok("hand.raise"))["position"] == 1
    await host.event("hand.raised", participant_id="a_keep")
    late = await room.join("cohost", replica=1)
    assert {s["participant_id"] for s in late.welcome["stage"]} >= {"p_keep"}
    assert [h["participant_id"] for h in late.welcome["hands"]] == ["a_keep"]
    assert not host.done and not attendee.done


async def test_nats_restart_keeps_clients_and_events_flow_again(own_stack):
    stack, nats_srv, _ = own_stack
    await stack.media_node("n1")
    room = await stack.webinar()
    host = await room.started(replica=0)
    attendee = await room.join("attendee", replica=1, pid="a_nats")
    await attendee.ok("subscribe", sdp=OFFER)
    nats_srv.stop()
    reply = await attendee.request("chat.send", within=15, text="hi", to="everyone")
    assert reply["code"] == "unavailable"
    nats_srv.start()
    for _ in range(100):  # clients reconnect to NATS within a few seconds
        await asyncio.sleep(0.1)
        if stack.nc.is_connected:
            break
    await asyncio.sleep(1.5)
    assert (await attendee.ok("hand.raise"))["position"] == 1
    raised = await host.event("hand.raised", participant_id="a_nats", within=10)
    assert raised["position"] == 1
    assert not host.done and not attendee.done


async def test_without_registry_clients_are_told_to_reconnect(keypair, redis_server):
    """No registry answers on this NATS: a join is refused with "reconnect shortly"."""
    nats_srv = NatsServer()
    nats_srv.start()
    try:
        async with running_stack(nats_srv.url, redis_server.url, keypair, "http://x") as stack:
            code, frame = await stack.refused(stack.token("w_unknown", "attendee"))
            assert code == 1013 and frame["code"] == "unavailable"
            assert "registry" in frame["message"]
    finally:
        nats_srv.stop()
