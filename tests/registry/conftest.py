from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from services.registry.main import create_app
from services.registry.settings import RegistrySettings
from tests.infra import NatsServer, RedisServer, serve

ADMIN = "test-admin-key"


@dataclass
class RegistryUnderTest:
    url: str
    http: httpx.AsyncClient
    settings: RegistrySettings

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN}"}


def registry_settings(nats_url: str, redis_url: str, keypair: tuple[str, str]) -> RegistrySettings:
    private, public = keypair
    return RegistrySettings(
        nats_url=nats_url, redis_url=redis_url, jwt_private_key=private, jwt_public_key=public,
        webinar_admin_key=ADMIN, public_web_url="http://127.0.0.1:8080", max_body_bytes=16384,
    )  # fmt: skip


@pytest.fixture
async def registry(
    nats_server: NatsServer, redis_server: RedisServer, keypair: tuple[str, str]
) -> AsyncIterator[RegistryUnderTest]:
    settings = registry_settings(nats_server.url, redis_server.url, keypair)
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        yield RegistryUnderTest(url, http, settings)


def webinar_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "title": "Launch day",
        "starts_at": "2030-01-01T15:00:00Z",
        "duration_minutes": 60,
        "mode": "webinar",
        "capacity": 100,
        "approval": "auto",
    }
    body.update(overrides)
    return body
