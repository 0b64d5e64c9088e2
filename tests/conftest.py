from collections.abc import Iterator

import pytest

from services.common.tokens import generate_keypair
from tests.infra import NatsServer, RedisServer


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keypair() -> tuple[str, str]:
    """(private PEM, public PEM) for join tokens in this test session."""
    return generate_keypair()
