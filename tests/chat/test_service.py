"""Running the chat service: HTTP health and metrics, `python -m services.chat`, AsyncAPI."""

import asyncio
import json

import httpx
import redis.asyncio as aioredis

from services.chat.asyncapi import PATH, generate
from services.chat.main import create_app
from services.common.events import make_event
from services.common.subjects import webinar_event
from services.common.telemetry import setup_tracing
from tests.chat.conftest import ALICE, BOB, HOST, Webinar
from tests.chat.test_chat import texts
from tests.infra import free_port, serve, service_process


async def test_healthz_and_metrics(settings, webinar: Webinar):
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"ok": True, "checks": {"nats": True, "redis": True}}
        await webinar.ok("chat.send", ALICE, text="counted")
        await webinar.fails("chat.send", ALICE, "invalid", text="")
        metrics = (await http.get("/metrics")).text
    assert 'webinar_chat_received_messages_total{app_name="chat"' in metrics
    assert 'webinar_chat_rejected_commands_total{code="invalid"}' in metrics
    assert webinar.id not in metrics  # no webinar ids as labels


async def test_python_m_services_chat_serves_commands(nats_server, redis_server, webinar: Webinar):
    port = free_port()
    env = {"NATS_URL": nats_server.url, "REDIS_URL": redis_server.url,
           "CHAT_PORT": str(port), "LOG_LEVEL": "WARNING"}  # fmt: skip
    async with service_process("services.chat", env, port):
        reply = await webinar.ok("chat.send", ALICE, text="from the real process")
        event = await webinar.events.next("chat.message")
        assert event.data["id"] == reply["message"]["id"]


def test_asyncapi_document_is_current():
    committed = json.loads(PATH.read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(generate())), (
        "services/chat/asyncapi.json is stale: run `python -m services.chat.asyncapi`"
    )
    operations = committed["operations"]
    subjects = {ch["address"] for ch in committed["channels"].values()}
    assert "svc.chat.chat.send" in subjects and "webinar.{webinar_id}.chat.message" in subjects
    assert len(operations) == 15 + 11 + 1  # commands, events out, webinar.deleted in


async def test_trace_follows_a_command_into_its_event(service, webinar: Webinar):
    setup_tracing("chat-tests", "")  # a real tracer provider, exporting nowhere
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    body = {"webinar_id": webinar.id, "participant": ALICE.ref(), "args": {"text": "traced"}}
    sub = await webinar.nc.subscribe(f"webinar.{webinar.id}.chat.message")
    reply = await webinar.nc.request(
        "svc.chat.chat.send", json.dumps(body).encode(), timeout=5, headers=headers
    )
    assert json.loads(reply.data)["ok"] is True
    msg = await sub.next_msg(timeout=5)
    await sub.unsubscribe()
    assert msg.headers is not None
    assert msg.headers["traceparent"].split("-")[1] == trace_id
    assert msg.headers["Nats-Msg-Id"] == json.loads(msg.data)["id"]


async def test_deleting_a_webinar_forgets_its_chat(service, webinar: Webinar, redis_server):
    w = webinar
    await w.ok("chat.send", ALICE, text="soon gone")
    question = (await w.ok("qa.ask", ALICE, text="gone too?"))["question"]["id"]
    await w.ok("qa.upvote", BOB, question_id=question)
    await w.ok("poll.create", HOST, question="Q?", options=["a", "b"])
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert len([k async for k in redis.scan_iter(f"*{{{w.id}}}*")]) >= 5
        # The registry publishes this to JetStream when an organizer deletes the webinar.
        event = make_event("webinar.deleted", w.id, {"id": w.id}, "/services/registry")
        await w.nc.jetstream().publish(
            webinar_event(w.id, "webinar.deleted"), event.model_dump_json().encode()
        )
        for _ in range(100):
            if not [k async for k in redis.scan_iter(f"*{{{w.id}}}*")]:
                break
            await asyncio.sleep(0.05)
        assert [k async for k in redis.scan_iter(f"*{{{w.id}}}*")] == []
    finally:
        await redis.aclose()
    assert texts(await w.ok("chat.history", ALICE)) == []
    assert (await w.ok("qa.list", ALICE))["questions"] == []
    assert (await w.ok("poll.list", ALICE))["polls"] == []
