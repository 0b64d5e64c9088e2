"""Registry state in Redis. Each mutation commits its event through the outbox in the
same MULTI, so state and event never disagree."""

import hashlib
import json
import secrets
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from services.common.events import CloudEvent, make_event
from services.common.outbox import Outbox
from services.common.revocations import revoked_key
from services.registry.models import (
    Panelist,
    Registration,
    RegistrationStatus,
    SpeakerRole,
    Status,
    Webinar,
)

SOURCE = "/services/registry"


class Full(Exception):
    """The webinar has no seat left."""


def _wkey(webinar_id: str) -> str:
    return f"wb:{webinar_id}"


def new_id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex[:16]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def now() -> datetime:
    return datetime.now(UTC)


class RegistryStore:
    def __init__(self, redis: aioredis.Redis, outbox: Outbox) -> None:
        self.redis = redis
        self.outbox = outbox

    async def _commit(self, writes: dict[str, str], events: list[CloudEvent]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key, value in writes.items():
                pipe.set(key, value)
            for event in events:
                self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()

    # organizers ---------------------------------------------------------------
    async def ensure_organizer(self, key: str, organizer_id: str, name: str) -> None:
        value = json.dumps({"id": organizer_id, "name": name})
        await self.redis.hset("org:keys", hash_key(key), value)

    async def create_organizer(self, name: str) -> tuple[str, str]:
        organizer_id, key = new_id("o_"), "wk_" + secrets.token_urlsafe(32)
        await self.ensure_organizer(key, organizer_id, name)
        return organizer_id, key

    async def organizer_for_key(self, key: str) -> str | None:
        raw = await self.redis.hget("org:keys", hash_key(key))
        if raw is None:
            return None
        return str(json.loads(raw)["id"])

    # webinars -----------------------------------------------------------------
    async def get_webinar(self, webinar_id: str) -> Webinar | None:
        raw = await self.redis.get(_wkey(webinar_id))
        return Webinar.model_validate_json(raw) if raw else None

    async def list_webinars(self, organizer_id: str | None) -> list[Webinar]:
        ids = await self.redis.zrange("wb:index", 0, -1)
        webinars = [w for w in [await self.get_webinar(str(i)) for i in ids] if w]
        return [w for w in webinars if organizer_id is None or w.organizer_id == organizer_id]

    async def save_webinar(self, webinar: Webinar, event_type: str) -> None:
        event = make_event(event_type, webinar.id, webinar.public().model_dump(mode="json"), SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_wkey(webinar.id), webinar.model_dump_json())
            pipe.zadd("wb:index", {webinar.id: webinar.starts_at.timestamp()})
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()

    async def set_status(self, webinar_id: str, status: Status) -> None:
        webinar = await self.get_webinar(webinar_id)
        if webinar and webinar.status != status:
            webinar.status = status
            await self.redis.set(_wkey(webinar_id), webinar.model_dump_json())

    async def delete_webinar(self, webinar: Webinar) -> None:
        keys = await self.redis.keys(f"{_wkey(webinar.id)}:*")
        event = make_event("webinar.deleted", webinar.id, {"id": webinar.id}, SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_wkey(webinar.id), *keys)
            pipe.zrem("wb:index", webinar.id)
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()

    # panelists ----------------------------------------------------------------
    async def add_panelist(
        self, webinar_id: str, name: str, email: str, role: SpeakerRole
    ) -> Panelist:
        panelist = Panelist(id=new_id("p_"), name=name, email=email, role=role, created_at=now())
        data = {"participant_id": panelist.id, "name": name, "role": role.value}
        event = make_event("panelist.added", webinar_id, data, SOURCE)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{_wkey(webinar_id)}:panelists", panelist.id, panelist.model_dump_json())
            self.outbox.stage(pipe, event)
            await pipe.execute()
        self.outbox.notify()
        return panelist

    async def list_panelists(self, webinar_id: str) -> list[Panelist]:
        raw = await self.redis.hvals(f"{_wkey(webinar_id)}:panelists")
        return sorted((Panelist.model_validate_json(r) for r in raw), key=lambda p: p.created_at)

    # registrations ------------------------------------------------------------
    async def register(
        self, webinar: Webinar, name: str, email: str, answers: dict[str, str], status_key: str
    ) -> tuple[Registration, bool]:
        """Register once per email; returns (registration, created)."""
        base = _wkey(webinar.id)
        email_key, regs_key, seats_key = f"{base}:reg:email", f"{base}:reg", f"{base}:reg:seats"
        email = email.lower()
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(email_key, seats_key)
                    existing = await pipe.hget(email_key, email)
                    if existing:
                        raw = await pipe.hget(regs_key, existing)
                        return Registration.model_validate_json(str(raw)), False
                    seats = int(await pipe.get(seats_key) or 0)
                    if seats >= webinar.capacity:
                        raise Full
                    status = (
                        RegistrationStatus.APPROVED
                        if webinar.approval == "auto"
                        else RegistrationStatus.PENDING
                    )
                    reg = Registration(
                        id=new_id("a_"), webinar_id=webinar.id, name=name, email=email,
                        answers=answers, status=status, created_at=now(),
                        decided_at=now() if status == RegistrationStatus.APPROVED else None,
                    )  # fmt: skip
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(email_key, email, reg.id)
                    pipe.hset(regs_key, reg.id, reg.model_dump_json())
                    pipe.hset(f"{base}:reg:keys", reg.id, hash_key(status_key))
                    pipe.incr(seats_key)
                    self.outbox.stage(pipe, self._registration_event("created", reg))
                    if status == RegistrationStatus.APPROVED:
                        self.outbox.stage(pipe, self._registration_event("approved", reg))
                    await pipe.execute()
                    self.outbox.notify()
                    return reg, True
                except WatchError:
                    continue

    @staticmethod
    def _registration_event(kind: str, reg: Registration) -> CloudEvent:
        data = {"registration_id": reg.id, "participant_id": reg.id, "name": reg.name,
                "status": reg.status.value}  # fmt: skip
        return make_event(f"registration.{kind}", reg.webinar_id, data, SOURCE)

    async def get_registration(self, webinar_id: str, rid: str) -> Registration | None:
        raw = await self.redis.hget(f"{_wkey(webinar_id)}:reg", rid)
        return Registration.model_validate_json(raw) if raw else None

    async def check_status_key(self, webinar_id: str, rid: str, key: str) -> bool:
        stored = await self.redis.hget(f"{_wkey(webinar_id)}:reg:keys", rid)
        return stored is not None and secrets.compare_digest(str(stored), hash_key(key))

    async def list_registrations(self, webinar_id: str) -> list[Registration]:
        raw = await self.redis.hvals(f"{_wkey(webinar_id)}:reg")
        regs = (Registration.model_validate_json(r) for r in raw)
        return sorted(regs, key=lambda r: r.created_at)

    async def decide(self, reg: Registration, status: RegistrationStatus) -> Registration:
        """Approve or reject; a rejection frees the seat and revokes the participant."""
        base = _wkey(reg.webinar_id)
        was_rejected = reg.status == RegistrationStatus.REJECTED
        reg.status, reg.decided_at = status, now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{base}:reg", reg.id, reg.model_dump_json())
            if status == RegistrationStatus.REJECTED and not was_rejected:
                pipe.decr(f"{base}:reg:seats")
                pipe.sadd(revoked_key(reg.webinar_id), reg.id)
            if status == RegistrationStatus.APPROVED:
                if was_rejected:
                    pipe.incr(f"{base}:reg:seats")
                pipe.srem(revoked_key(reg.webinar_id), reg.id)
            self.outbox.stage(pipe, self._registration_event(status.value, reg))
            await pipe.execute()
        self.outbox.notify()
        return reg
