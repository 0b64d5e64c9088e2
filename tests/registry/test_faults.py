"""NATS or Redis away: the registry says so, keeps every event and recovers by itself."""

import asyncio
import json

import httpx
import nats

from services.common.subjects import EVENTS_STREAM
from services.registry.main import create_app
from tests.infra import NatsServer, RedisServer, serve
from tests.registry.conftest import ADMIN, registry_settings, webinar_body

AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def test_event_survives_nats_outage(keypair, redis_server):
    nats_srv = NatsServer()
    nats_srv.start()
    settings = registry_settings(nats_srv.url, redis_server.url, keypair)
    try:
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
            nats_srv.stop()
            resp = await http.post("/v1/webinars", json=webinar_body(), headers=AUTH)
            assert resp.status_code == 201
            wid = resp.json()["id"]
            health = await http.get("/healthz")
            assert health.status_code == 503 and health.json()["checks"]["nats"] is False
            nats_srv.start()
            nc = await nats.connect(nats_srv.url)
            sub = await nc.jetstream().subscribe(f"webinar.{wid}.>", stream=EVENTS_STREAM)
            msg = await sub.next_msg(timeout=15)
            assert json.loads(msg.data)["type"] == "io.webinar.webinar.created.v1"
            await nc.close()
            for _ in range(50):
                if (await http.get("/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await http.get("/healthz")).status_code == 200
    finally:
        nats_srv.stop()


async def test_redis_outage_is_503_then_recovers(keypair, nats_server):
    redis_srv = RedisServer()
    redis_srv.start()
    settings = registry_settings(nats_server.url, redis_srv.url, keypair)
    try:
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
            redis_srv.stop()
            resp = await http.post("/v1/webinars", json=webinar_body(), headers=AUTH)
            assert resp.status_code == 503
            assert resp.json()["error"]["code"] == "unavailable"
            redis_srv.start()
            resp = await http.post("/v1/webinars", json=webinar_body(), headers=AUTH)
            assert resp.status_code == 201
    finally:
        redis_srv.stop()


async def test_start_waits_for_redis_and_nats(keypair, caplog):
    nats_srv, redis_srv = NatsServer(), RedisServer()
    settings = registry_settings(nats_srv.url, redis_srv.url, keypair)

    async def bring_up_later() -> None:
        await asyncio.sleep(1.5)
        redis_srv.start()
        await asyncio.sleep(1.0)
        nats_srv.start()

    later = asyncio.create_task(bring_up_later())
    try:
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
            resp = await http.post("/v1/webinars", json=webinar_body(), headers=AUTH)
            assert resp.status_code == 201
        logs = caplog.text
        assert "Redis at redis://127.0.0.1" in logs and "not reachable" in logs
        assert f"NATS at {nats_srv.url} not reachable" in logs
    finally:
        await later
        nats_srv.stop()
        redis_srv.stop()
