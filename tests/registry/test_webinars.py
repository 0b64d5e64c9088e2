"""Webinar CRUD, organizer keys and input errors, against real NATS and Redis."""

from services.common.tokens import Role, TokenVerifier
from tests.registry.conftest import RegistryUnderTest, webinar_body


async def create(reg: RegistryUnderTest, **overrides: object) -> dict:
    resp = await reg.http.post("/v1/webinars", json=webinar_body(**overrides), headers=reg.admin)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def test_create_returns_host_link_with_valid_token(registry, keypair):
    created = await create(registry)
    claims = TokenVerifier(keypair[1]).verify(created["host"]["token"], created["id"])
    assert claims.role == Role.HOST
    assert created["host"]["join_url"].startswith("http://127.0.0.1:8080/join?token=")
    assert created["registration_url"].endswith(f"/register/{created['id']}")
    assert created["webinar"]["status"] == "scheduled"


async def test_public_view_hides_organizer_fields(registry):
    created = await create(registry, title="Public")
    resp = await registry.http.get(f"/v1/webinars/{created['id']}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["title"] == "Public"
    assert "host_id" not in body and "organizer_id" not in body


async def test_missing_or_wrong_organizer_key_is_401(registry):
    resp = await registry.http.post("/v1/webinars", json=webinar_body())
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"
    resp = await registry.http.post(
        "/v1/webinars", json=webinar_body(), headers={"Authorization": "Bearer nope"}
    )
    assert resp.status_code == 401


async def test_bad_fields_are_named_in_422(registry):
    body = webinar_body(mode="party", capacity=0)
    del body["title"]
    resp = await registry.http.post("/v1/webinars", json=body, headers=registry.admin)
    assert resp.status_code == 422
    fields = {f["field"] for f in resp.json()["error"]["fields"]}
    assert {"title", "mode", "capacity"} <= fields


async def test_naive_datetime_is_rejected(registry):
    resp = await registry.http.post(
        "/v1/webinars", json=webinar_body(starts_at="2030-01-01T15:00:00"), headers=registry.admin
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["fields"][0]["field"] == "starts_at"


async def test_malformed_json_is_4xx_json(registry):
    resp = await registry.http.post(
        "/v1/webinars",
        content=b"{not json",
        headers={**registry.admin, "Content-Type": "application/json"},
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid"


async def test_oversized_body_is_413(registry):
    resp = await registry.http.post(
        "/v1/webinars", json=webinar_body(description="x" * 20000), headers=registry.admin
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "too_large"


async def test_oversized_field_is_422(registry):
    resp = await registry.http.post(
        "/v1/webinars", json=webinar_body(title="x" * 201), headers=registry.admin
    )
    assert resp.status_code == 422


async def test_unknown_webinar_is_404(registry):
    resp = await registry.http.get("/v1/webinars/doesnotexist")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
    resp = await registry.http.patch(
        "/v1/webinars/doesnotexist", json={"title": "x"}, headers=registry.admin
    )
    assert resp.status_code == 404


async def test_patch_and_delete(registry):
    created = await create(registry)
    wid = created["id"]
    resp = await registry.http.patch(
        f"/v1/webinars/{wid}", json={"title": "Renamed", "capacity": 5}, headers=registry.admin
    )
    assert resp.status_code == 200
    assert resp.json()["title"] == "Renamed" and resp.json()["capacity"] == 5
    resp = await registry.http.patch(
        f"/v1/webinars/{wid}", json={"colour": "red"}, headers=registry.admin
    )
    assert resp.status_code == 422
    resp = await registry.http.patch(f"/v1/webinars/{wid}", json={"title": None},
                                     headers=registry.admin)  # fmt: skip
    assert resp.status_code == 422
    assert (await registry.http.delete(f"/v1/webinars/{wid}")).status_code == 401
    assert (
        await registry.http.delete(f"/v1/webinars/{wid}", headers=registry.admin)
    ).status_code == 204
    assert (await registry.http.get(f"/v1/webinars/{wid}")).status_code == 404


async def test_organizer_keys_are_scoped_and_stored_hashed(registry, redis_server):
    import redis.asyncio as aioredis

    resp = await registry.http.post("/v1/organizers", json={"name": "Acme"}, headers=registry.admin)
    assert resp.status_code == 201
    key = resp.json()["key"]
    acme = {"Authorization": f"Bearer {key}"}
    resp = await registry.http.post("/v1/webinars", json=webinar_body(), headers=acme)
    assert resp.status_code == 201
    wid = resp.json()["id"]
    other = (await registry.http.post("/v1/organizers", json={"name": "Other"},
                                      headers=registry.admin)).json()["key"]  # fmt: skip
    resp = await registry.http.patch(
        f"/v1/webinars/{wid}", json={"title": "mine"}, headers={"Authorization": f"Bearer {other}"}
    )
    assert resp.status_code == 403
    listed = (await registry.http.get("/v1/webinars", headers=acme)).json()
    assert [w["id"] for w in listed] == [wid]
    resp = await registry.http.post("/v1/organizers", json={"name": "x"}, headers=acme)
    assert resp.status_code == 403
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    stored = await client.hgetall("org:keys")
    await client.aclose()
    assert key not in stored and all(key not in v for v in stored.values())


async def test_host_link_reissue(registry, keypair):
    created = await create(registry)
    resp = await registry.http.post(
        f"/v1/webinars/{created['id']}/host-link", headers=registry.admin
    )
    assert resp.status_code == 200
    claims = TokenVerifier(keypair[1]).verify(resp.json()["token"])
    assert claims.participant_id == created["host"]["participant_id"]


async def test_panelists(registry, keypair):
    created = await create(registry)
    wid = created["id"]
    resp = await registry.http.post(
        f"/v1/webinars/{wid}/panelists", json={"name": "Ada", "email": "ada@example.org"},
        headers=registry.admin,
    )  # fmt: skip
    assert resp.status_code == 201
    claims = TokenVerifier(keypair[1]).verify(resp.json()["token"], wid)
    assert claims.role == Role.PANELIST and claims.name == "Ada"
    listed = (
        await registry.http.get(f"/v1/webinars/{wid}/panelists", headers=registry.admin)
    ).json()
    assert [p["name"] for p in listed] == ["Ada"]
    resp = await registry.http.post(
        f"/v1/webinars/{wid}/panelists", json={"name": "Bob", "email": "not-an-email"},
        headers=registry.admin,
    )  # fmt: skip
    assert resp.status_code == 422
    assert resp.json()["error"]["fields"][0]["field"] == "email"


async def test_health_and_metrics(registry):
    resp = await registry.http.get("/healthz")
    assert resp.status_code == 200 and resp.json()["checks"] == {"nats": True, "redis": True}
    resp = await registry.http.get("/metrics")
    assert resp.status_code == 200 and "python_info" in resp.text


async def test_web_client_origin_may_register(registry):
    created = await create(registry)
    resp = await registry.http.options(
        f"/v1/webinars/{created['id']}/registrations",
        headers={"Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
    )  # fmt: skip
    assert resp.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    resp = await registry.http.get(f"/v1/webinars/{created['id']}",
                                   headers={"Origin": "http://evil.example"})  # fmt: skip
    assert "access-control-allow-origin" not in resp.headers
