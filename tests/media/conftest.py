import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from nats.aio.client import Client as NATS

from services.common.connections import connect_nats
from services.media.settings import MediaSettings
from tests.infra import NatsServer, RedisServer

SLOTS = (2, 2, 1)  # audio, video, screen: small, to keep the machine calm


@pytest.fixture
def media_settings(
    nats_server: NatsServer, redis_server: RedisServer
) -> Callable[..., MediaSettings]:
    def make(**overrides: object) -> MediaSettings:
        values: dict[str, object] = {
            "nats_url": nats_server.url,
            "redis_url": redis_server.url,
            "media_node_id": f"n{uuid.uuid4().hex[:8]}",
            "media_ice_host": "127.0.0.1",
            "media_slots_audio": SLOTS[0],
            "media_slots_video": SLOTS[1],
            "media_slots_screen": SLOTS[2],
        }
        values.update(overrides)
        return MediaSettings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await connect_nats(nats_server.url, "media-test-client")
    yield client
    await client.drain()


@pytest.fixture
def webinar_id() -> str:
    return f"w{uuid.uuid4().hex[:10]}"
