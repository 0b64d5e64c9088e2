"""Many clients at once, spread over both replicas."""

import asyncio

from tests.signaling.conftest import Stack


async def test_concurrent_joins_fill_capacity_exactly_and_all_hear_the_start(stack: Stack):
    room = await stack.webinar(capacity=30)
    host = await room.join("host", replica=0)

    async def try_join(i: int):
        client = await stack.open(room.token("attendee", pid=f"a_{i:02d}"), replica=i % 2)
        await client.wait(lambda f: f.get("type") in ("welcome", "error"), what="first frame")
        return client

    clients = await asyncio.gather(*(try_join(i) for i in range(40)))
    welcomed = [c for c in clients if c.frames[0]["type"] == "welcome"]
    refused = [c for c in clients if c.frames[0]["type"] == "error"]
    assert len(welcomed) == 30 and len(refused) == 10
    for client in refused:
        assert (await client.closed())[0] == 4409
    assert all(c.frames[0]["lobby"] is True for c in welcomed)
    await host.ok("webinar.start")
    for client in welcomed:
        await client.event("webinar.started")
    for client in welcomed[:10]:
        await client.ok("hand.raise")
    hands = await host.event("hand.raised", position=10)
    assert len(hands["hands"]) == 10
    joined = {e["participant_id"] for e in room.events.of("participant.joined")}
    assert len(joined) == 31


async def test_a_crowd_leaving_at_once_all_leave(stack: Stack):
    """More clients than Redis connections in the pool leave together: none is left behind
    as a phantom participant (each gets its grace period, then participant.left)."""
    room = await stack.webinar(capacity=300)
    host = await room.started(replica=0)
    clients = await asyncio.gather(*(
        stack.join(room.token("attendee", pid=f"c_{i:03d}"), replica=i % 2) for i in range(240)
    ))  # fmt: skip
    await asyncio.gather(*(c.close() for c in clients))
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        present = (await host.ok("participant.list"))["participants"]
        if len(present) == 1 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.3)
    assert [p["id"] for p in present] == [host.welcome["participant"]["id"]]
    left = {e["participant_id"] for e in room.events.of("participant.left")}
    assert len(left) == 240
