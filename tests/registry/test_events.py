"""Every registry change reaches NATS as a CloudEvent in WEBINAR_EVENTS; the report
is fed back from participant events."""

import asyncio
import json
from datetime import datetime

import nats
import pytest

from services.common.events import CloudEvent, make_event
from services.common.subjects import EVENTS_STREAM, REGISTRY_WEBINAR_GET, webinar_event
from tests.registry.conftest import webinar_body


async def collect(js, wid: str, count: int, wait: float = 5.0) -> list[CloudEvent]:
    """Replay the webinar's events from the stream with an ephemeral consumer."""
    sub = await js.subscribe(f"webinar.{wid}.>", stream=EVENTS_STREAM, ordered_consumer=True)
    events: list[CloudEvent] = []
    try:
        while len(events) < count:
            msg = await sub.next_msg(timeout=wait)
            raw = json.loads(msg.data)
            assert raw["specversion"] == "1.0"
            assert msg.headers and msg.headers["traceparent"].startswith("00-")
            event = CloudEvent.model_validate(raw)
            assert msg.subject == webinar_event(wid, event.event_type)
            events.append(event)
    finally:
        await sub.unsubscribe()
    return events


@pytest.fixture
async def js(nats_server):
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


async def test_event_continues_the_callers_trace(registry, js):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**registry.admin, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    created = await registry.http.post("/v1/webinars", json=webinar_body(), headers=headers)
    sub = await js.subscribe(f"webinar.{created.json()['id']}.>", stream=EVENTS_STREAM)
    msg = await sub.next_msg(timeout=5)
    assert msg.headers["traceparent"].split("-")[1] == trace_id


async def test_changes_publish_cloudevents(registry, js):
    created = (await registry.http.post("/v1/webinars", json=webinar_body(),
                                        headers=registry.admin)).json()  # fmt: skip
    wid = created["id"]
    await registry.http.patch(f"/v1/webinars/{wid}", json={"title": "New"}, headers=registry.admin)
    await registry.http.post(f"/v1/webinars/{wid}/panelists",
                             json={"name": "Ada", "email": "ada@example.org"},
                             headers=registry.admin)  # fmt: skip
    await registry.http.post(f"/v1/webinars/{wid}/registrations",
                             json={"name": "Eve", "email": "eve@example.org"})  # fmt: skip
    events = await collect(js, wid, 5)
    assert [e.event_type for e in events] == [
        "webinar.created", "webinar.updated", "panelist.added",
        "registration.created", "registration.approved",
    ]  # fmt: skip
    for e in events:
        assert e.type == f"io.webinar.{e.event_type}.v1"
        assert e.subject == wid and e.source == "/services/registry"
        assert isinstance(e.time, datetime) and e.id
    assert events[1].data["title"] == "New"
    assert "token" not in json.dumps([e.data for e in events])


async def test_webinar_lookup_for_other_services(registry, nats_server):
    created = (await registry.http.post("/v1/webinars", json=webinar_body(mode="meeting"),
                                        headers=registry.admin)).json()  # fmt: skip
    nc = await nats.connect(nats_server.url)
    reply = await nc.request(
        REGISTRY_WEBINAR_GET, json.dumps({"webinar_id": created["id"]}).encode(), 2
    )
    assert json.loads(reply.data)["webinar"]["mode"] == "meeting"
    reply = await nc.request(REGISTRY_WEBINAR_GET, b'{"webinar_id": "nope"}', 2)
    assert json.loads(reply.data) == {"error": "not_found"}
    reply = await nc.request(REGISTRY_WEBINAR_GET, b"not json", 2)
    assert json.loads(reply.data)["error"] == "invalid"
    await nc.close()


async def test_report_from_participant_events(registry, js):
    created = (await registry.http.post("/v1/webinars", json=webinar_body(),
                                        headers=registry.admin)).json()  # fmt: skip
    wid = created["id"]
    reg = (await registry.http.post(f"/v1/webinars/{wid}/registrations",
                                    json={"name": "Eve", "email": "eve@example.org"})).json()  # fmt: skip
    pid = reg["registration"]["id"]
    who = {"participant_id": pid, "name": "Eve", "role": "attendee"}
    for kind, data in [
        ("webinar.started", {}),
        ("participant.joined", who),
        ("hand.raised", who),
        ("qa.asked", {**who, "text": "When is the recording out?"}),
        ("participant.left", who),
    ]:
        event = make_event(kind, wid, data, "/tests")
        await js.publish(webinar_event(wid, kind), event.model_dump_json().encode())
        await asyncio.sleep(0.01)
    for _ in range(100):
        report = (
            await registry.http.get(f"/v1/webinars/{wid}/report", headers=registry.admin)
        ).json()
        rows = report["attendees"]
        if rows and rows[0]["last_left_at"]:
            break
        await asyncio.sleep(0.05)
    assert report["webinar"]["status"] == "live"
    row = rows[0]
    assert row["email"] == "eve@example.org" and row["hands_raised"] == 1
    assert row["questions"] == ["When is the recording out?"]
    assert row["first_joined_at"] and row["attended_seconds"] >= 0
    assert (await registry.http.get(f"/v1/webinars/{wid}/report")).status_code == 401
