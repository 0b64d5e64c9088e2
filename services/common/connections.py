"""NATS and Redis connections that wait for their server at start and reconnect after."""

import asyncio
import logging

import nats
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.subjects import EVENTS_STREAM, EVENTS_STREAM_SUBJECTS

log = logging.getLogger(__name__)
RETRY_DELAY = 1.0


async def connect_nats(url: str, name: str) -> NATS:
    """Connect, retrying until NATS answers; afterwards nats-py reconnects forever."""

    async def on_disconnect() -> None:
        log.warning("NATS disconnected from %s; reconnecting", url)

    async def on_reconnect() -> None:
        log.info("NATS reconnected to %s", url)

    async def on_error(exc: Exception) -> None:
        log.warning("NATS at %s not reachable or failing: %s", url, exc)

    attempt = 0
    while True:
        try:
            return await nats.connect(
                servers=[url],
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RETRY_DELAY,
                connect_timeout=2,
                allow_reconnect=True,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
            )
        except Exception as exc:  # noqa: BLE001 - any failure means "not there yet"
            attempt += 1
            log.warning("NATS at %s not reachable (%s); retry %d", url, exc, attempt)
            await asyncio.sleep(RETRY_DELAY)


async def ensure_events_stream(js: JetStreamContext) -> None:
    """Create the WEBINAR_EVENTS stream if it does not exist yet."""
    config = StreamConfig(name=EVENTS_STREAM, subjects=EVENTS_STREAM_SUBJECTS, max_age=30 * 86400)
    while True:
        try:
            await js.find_stream_name_by_subject(EVENTS_STREAM_SUBJECTS[0])
            return
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config)
                log.info("created JetStream stream %s", EVENTS_STREAM)
                return
            except nats.js.errors.BadRequestError:
                return  # another replica created it meanwhile
        except Exception as exc:  # noqa: BLE001
            log.warning("JetStream not ready (%s); retrying", exc)
            await asyncio.sleep(RETRY_DELAY)


def redis_client(url: str, max_connections: int = 200) -> aioredis.Redis:
    """A client that retries a command across short outages. The pool blocks (up to
    5 s) when all connections are busy instead of failing at once, so a burst of work
    (hundreds of clients leaving together) waits its turn rather than being lost."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)


async def wait_for_redis(client: aioredis.Redis, url: str) -> None:
    attempt = 0
    while True:
        try:
            await client.ping()
            return
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            attempt += 1
            log.warning("Redis at %s not reachable (%s); retry %d", _redact(url), exc, attempt)
            await asyncio.sleep(RETRY_DELAY)


def _redact(url: str) -> str:
    """Drop a password from a URL before it reaches a log."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


async def shutdown(tasks: list[asyncio.Task[None]], nc: NATS, redis: aioredis.Redis) -> None:
    """Stop background tasks first, then flush NATS (bounded) and close Redis."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=2)
    try:
        await asyncio.wait_for(nc.drain(), 5)
    except Exception:  # noqa: BLE001 - a server that is away cannot be drained
        await nc.close()
    await redis.aclose()


async def redis_answers(redis: aioredis.Redis | None) -> bool:
    """For health checks: does Redis answer a PING right now?"""
    if redis is None:
        return False
    try:
        return bool(await redis.ping())
    except Exception:  # noqa: BLE001 - not reachable is the answer
        return False
