"""Public registration, approval and capacity, against real NATS and Redis."""

import redis.asyncio as aioredis

from services.common.revocations import is_revoked
from services.common.tokens import Role, TokenVerifier
from tests.registry.conftest import RegistryUnderTest, webinar_body

QUESTIONS = [
    {"id": "company", "label": "Company", "required": True},
    {"id": "level", "label": "Level", "choices": ["beginner", "expert"]},
]


async def new_webinar(reg: RegistryUnderTest, **overrides: object) -> str:
    resp = await reg.http.post("/v1/webinars", json=webinar_body(**overrides), headers=reg.admin)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def register(reg: RegistryUnderTest, wid: str, email: str, **extra: object):
    return await reg.http.post(
        f"/v1/webinars/{wid}/registrations", json={"name": "Eve", "email": email, **extra}
    )


async def test_auto_approval_returns_attendee_token(registry, keypair):
    wid = await new_webinar(registry)
    resp = await register(registry, wid, "eve@example.org")
    assert resp.status_code == 201
    body = resp.json()
    assert body["status"] == "approved"
    claims = TokenVerifier(keypair[1]).verify(body["token"], wid)
    assert claims.role == Role.ATTENDEE and claims.participant_id == body["registration"]["id"]
    assert body["join_url"].endswith(body["token"])


async def test_same_email_gives_same_registration(registry):
    wid = await new_webinar(registry)
    first = (await register(registry, wid, "Eve@Example.org")).json()
    again = await register(registry, wid, "eve@example.org")
    assert again.status_code == 200
    assert again.json()["registration"]["id"] == first["registration"]["id"]
    listed = await registry.http.get(f"/v1/webinars/{wid}/registrations", headers=registry.admin)
    assert len(listed.json()) == 1


async def test_full_webinar_is_409(registry):
    wid = await new_webinar(registry, capacity=1)
    assert (await register(registry, wid, "a@example.org")).status_code == 201
    resp = await register(registry, wid, "b@example.org")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "conflict"


async def test_questions_are_validated_by_name(registry):
    wid = await new_webinar(registry, questions=QUESTIONS)
    resp = await register(registry, wid, "q@example.org", answers={"level": "guru"})
    assert resp.status_code == 422
    fields = {f["field"] for f in resp.json()["error"]["fields"]}
    assert fields == {"answers.company", "answers.level"}
    resp = await register(registry, wid, "q@example.org", answers={"company": "Acme"})
    assert resp.status_code == 201
    assert resp.json()["registration"]["answers"] == {"company": "Acme"}


async def test_bad_registration_fields_are_named(registry):
    wid = await new_webinar(registry)
    resp = await registry.http.post(
        f"/v1/webinars/{wid}/registrations", json={"name": "", "email": "nope"}
    )
    assert resp.status_code == 422
    assert {f["field"] for f in resp.json()["error"]["fields"]} == {"name", "email"}
    resp = await register(registry, "unknown", "x@example.org")
    assert resp.status_code == 404


async def test_manual_approval_flow(registry, keypair, redis_server):
    wid = await new_webinar(registry, approval="manual")
    resp = await register(registry, wid, "m@example.org")
    body = resp.json()
    assert body["status"] == "pending" and body["token"] is None
    status_url = body["status_url"]
    assert (await registry.http.get(status_url)).json()["status"] == "pending"
    forged = status_url.split("key=")[0] + "key=guess"
    assert (await registry.http.get(forged)).status_code == 404

    rid = body["registration"]["id"]
    path = f"/v1/webinars/{wid}/registrations/{rid}"
    assert (await registry.http.post(f"{path}/approve")).status_code == 401
    approved = await registry.http.post(f"{path}/approve", headers=registry.admin)
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    polled = (await registry.http.get(status_url)).json()
    assert polled["status"] == "approved"
    assert TokenVerifier(keypair[1]).verify(polled["token"], wid).participant_id == rid

    rejected = await registry.http.post(f"{path}/reject", headers=registry.admin)
    assert rejected.json()["status"] == "rejected" and rejected.json()["token"] is None
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    assert await is_revoked(client, wid, rid)
    await client.aclose()
    unknown = await registry.http.post(
        f"/v1/webinars/{wid}/registrations/nope/approve", headers=registry.admin
    )
    assert unknown.status_code == 404


async def test_rejection_frees_a_seat(registry):
    wid = await new_webinar(registry, capacity=1, approval="manual")
    rid = (await register(registry, wid, "a@example.org")).json()["registration"]["id"]
    assert (await register(registry, wid, "b@example.org")).status_code == 409
    await registry.http.post(
        f"/v1/webinars/{wid}/registrations/{rid}/reject", headers=registry.admin
    )
    assert (await register(registry, wid, "b@example.org")).status_code == 201
