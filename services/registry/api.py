"""REST routes of the registry (`/v1`)."""

import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response

from services.common.tokens import Role, TokenIssuer
from services.registry.attendance import Attendance
from services.registry.models import (
    JoinLink,
    OrganizerCreate,
    OrganizerCreated,
    Panelist,
    PanelistCreate,
    Registration,
    RegistrationCreate,
    RegistrationResult,
    RegistrationStatus,
    Webinar,
    WebinarCreate,
    WebinarCreated,
    WebinarPublic,
    WebinarUpdate,
)
from services.registry.settings import RegistrySettings
from services.registry.store import Full, RegistryStore, new_id, now

router = APIRouter(prefix="/v1")
ADMIN_ID = "admin"


class Registry:
    """What the routes need, built once in main.py."""

    def __init__(
        self,
        settings: RegistrySettings,
        store: RegistryStore,
        issuer: TokenIssuer,
        attendance: Attendance,
    ) -> None:
        self.settings = settings
        self.store = store
        self.issuer = issuer
        self.attendance = attendance

    def join_link(self, webinar: Webinar, participant_id: str, name: str, role: Role) -> JoinLink:
        end = webinar.starts_at + timedelta(minutes=webinar.duration_minutes)
        expires = max(end, now()) + timedelta(hours=self.settings.token_grace_hours)
        token = self.issuer.issue(webinar.id, participant_id, name, role, int(expires.timestamp()))
        url = f"{self.settings.public_web_url}/join?token={token}"
        return JoinLink(participant_id=participant_id, role=role.value, join_url=url, token=token)

    def registration_url(self, webinar_id: str) -> str:
        return f"{self.settings.public_web_url}/register/{webinar_id}"


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


Reg = Annotated[Registry, Depends(registry)]


async def organizer(reg: Reg, authorization: Annotated[str | None, Header()] = None) -> str:
    """The organizer id behind the bearer key; 401 without a valid one."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise HTTPException(401, "organizer key required: Authorization: Bearer <key>")
    if secrets.compare_digest(key, reg.settings.webinar_admin_key):
        return ADMIN_ID
    organizer_id = await reg.store.organizer_for_key(key)
    if organizer_id is None:
        raise HTTPException(401, "unknown organizer key")
    return organizer_id


Organizer = Annotated[str, Depends(organizer)]


async def load_webinar(reg: Registry, webinar_id: str) -> Webinar:
    webinar = await reg.store.get_webinar(webinar_id) if len(webinar_id) <= 64 else None
    if webinar is None:
        raise HTTPException(404, f"webinar {webinar_id} not found")
    return webinar


async def owned_webinar(reg: Reg, who: Organizer, webinar_id: str) -> Webinar:
    webinar = await load_webinar(reg, webinar_id)
    if who not in (ADMIN_ID, webinar.organizer_id):
        raise HTTPException(403, "this webinar belongs to another organizer")
    return webinar


Owned = Annotated[Webinar, Depends(owned_webinar)]


@router.post("/organizers", status_code=201)
async def create_organizer(body: OrganizerCreate, reg: Reg, who: Organizer) -> OrganizerCreated:
    """Admin only: a new organizer key, shown once and stored hashed."""
    if who != ADMIN_ID:
        raise HTTPException(403, "only the admin key may create organizer keys")
    organizer_id, key = await reg.store.create_organizer(body.name)
    return OrganizerCreated(id=organizer_id, name=body.name, key=key)


@router.post("/webinars", status_code=201)
async def create_webinar(body: WebinarCreate, reg: Reg, who: Organizer) -> WebinarCreated:
    fields = body.model_dump(exclude={"host_name"})
    webinar = Webinar(
        id=new_id(), organizer_id=who, host_id=new_id("h_"), host_name=body.host_name,
        created_at=now(), **fields,
    )  # fmt: skip
    await reg.store.save_webinar(webinar, "webinar.created")
    return WebinarCreated(
        id=webinar.id,
        webinar=webinar.public(),
        host=reg.join_link(webinar, webinar.host_id, webinar.host_name, Role.HOST),
        registration_url=reg.registration_url(webinar.id),
    )


@router.get("/webinars")
async def list_webinars(reg: Reg, who: Organizer) -> list[WebinarPublic]:
    mine = await reg.store.list_webinars(None if who == ADMIN_ID else who)
    return [w.public() for w in mine]


@router.get("/webinars/{webinar_id}")
async def get_webinar(webinar_id: str, reg: Reg) -> WebinarPublic:
    return (await load_webinar(reg, webinar_id)).public()


@router.patch("/webinars/{webinar_id}")
async def update_webinar(body: WebinarUpdate, webinar: Owned, reg: Reg) -> WebinarPublic:
    changes = body.model_dump(exclude_unset=True)
    if any(v is None for v in changes.values()):
        raise HTTPException(422, "fields may be omitted but not null")
    updated = webinar.model_copy(update=changes)
    await reg.store.save_webinar(updated, "webinar.updated")
    return updated.public()


@router.delete("/webinars/{webinar_id}", status_code=204)
async def delete_webinar(webinar: Owned, reg: Reg) -> Response:
    await reg.store.delete_webinar(webinar)
    return Response(status_code=204)


@router.post("/webinars/{webinar_id}/host-link")
async def host_link(webinar: Owned, reg: Reg) -> JoinLink:
    """A fresh host join link, e.g. when the first one was lost."""
    return reg.join_link(webinar, webinar.host_id, webinar.host_name, Role.HOST)


@router.post("/webinars/{webinar_id}/panelists", status_code=201)
async def add_panelist(body: PanelistCreate, webinar: Owned, reg: Reg) -> JoinLink:
    panelist = await reg.store.add_panelist(webinar.id, body.name, str(body.email), body.role)
    return reg.join_link(webinar, panelist.id, panelist.name, Role(body.role.value))


@router.get("/webinars/{webinar_id}/panelists")
async def list_panelists(webinar: Owned, reg: Reg) -> list[Panelist]:
    return await reg.store.list_panelists(webinar.id)


@router.post("/webinars/{webinar_id}/registrations", status_code=201)
async def register(
    webinar_id: str, body: RegistrationCreate, reg: Reg, response: Response
) -> RegistrationResult:
    webinar = await load_webinar(reg, webinar_id)
    answers = _check_answers(webinar, body.answers)
    status_key = secrets.token_urlsafe(24)
    try:
        registration, created = await reg.store.register(
            webinar, body.name, str(body.email), answers, status_key
        )
    except Full:
        raise HTTPException(409, "this webinar is full") from None
    if not created:
        response.status_code = 200
    result = _result(reg, webinar, registration)
    if created:
        result.status_url = (
            f"/v1/webinars/{webinar.id}/registrations/{registration.id}/status?key={status_key}"
        )
    return result


def _check_answers(webinar: Webinar, answers: dict[str, str]) -> dict[str, str]:
    known = {q.id: q for q in webinar.questions}
    errors = []
    for qid in answers:
        if qid not in known:
            errors.append({"field": f"answers.{qid}", "message": "unknown question"})
    for q in webinar.questions:
        value = answers.get(q.id, "")
        if q.required and not value:
            errors.append({"field": f"answers.{q.id}", "message": "this question is required"})
        elif value and q.choices and value not in q.choices:
            errors.append({"field": f"answers.{q.id}", "message": "not one of the choices"})
    if errors:
        names = ", ".join(e["field"] for e in errors)
        raise HTTPException(422, {"message": f"invalid {names}", "fields": errors})
    return answers


def _result(reg: Registry, webinar: Webinar, registration: Registration) -> RegistrationResult:
    result = RegistrationResult(registration=registration, status=registration.status)
    if registration.status == RegistrationStatus.APPROVED:
        link = reg.join_link(webinar, registration.id, registration.name, Role.ATTENDEE)
        result.join_url, result.token = link.join_url, link.token
    return result


@router.get("/webinars/{webinar_id}/registrations/{rid}/status")
async def registration_status(webinar_id: str, rid: str, key: str, reg: Reg) -> RegistrationResult:
    """For the registrant, with the key from their registration: pending, or the join link."""
    webinar = await load_webinar(reg, webinar_id)
    registration = await reg.store.get_registration(webinar_id, rid)
    if registration is None or not await reg.store.check_status_key(webinar_id, rid, key):
        raise HTTPException(404, "registration not found")
    return _result(reg, webinar, registration)


@router.get("/webinars/{webinar_id}/registrations")
async def list_registrations(webinar: Owned, reg: Reg) -> list[Registration]:
    return await reg.store.list_registrations(webinar.id)


async def _decide(reg: Registry, webinar: Webinar, rid: str, status: RegistrationStatus) -> Any:
    registration = await reg.store.get_registration(webinar.id, rid)
    if registration is None:
        raise HTTPException(404, f"registration {rid} not found")
    registration = await reg.store.decide(registration, status)
    return _result(reg, webinar, registration)


@router.post("/webinars/{webinar_id}/registrations/{rid}/approve")
async def approve(rid: str, webinar: Owned, reg: Reg) -> RegistrationResult:
    result: RegistrationResult = await _decide(reg, webinar, rid, RegistrationStatus.APPROVED)
    return result


@router.post("/webinars/{webinar_id}/registrations/{rid}/reject")
async def reject(rid: str, webinar: Owned, reg: Reg) -> RegistrationResult:
    result: RegistrationResult = await _decide(reg, webinar, rid, RegistrationStatus.REJECTED)
    return result


@router.get("/webinars/{webinar_id}/report")
async def report(webinar: Owned, reg: Reg) -> dict[str, Any]:
    rows = await reg.attendance.report(webinar.id)
    return {"webinar": webinar.public(), "attendees": rows}
