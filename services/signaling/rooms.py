"""Room state in Redis, shared by every signaling replica.

Per webinar (`sig:<webinar_id>:...`):
- `people`   hash participant id -> JSON {id, name, role, joined_at}: who is in the room,
             including participants inside their reconnect grace period;
- `stage`    the same for those on stage (hosts, cohosts, panelists, promoted attendees);
- `conn`     hash participant id -> id of the participant's latest connection;
- `attendees` set of present attendees (capacity);
- `promoted` set of attendees on stage;
- `hands`    sorted set: the raised-hand queue, ordered by a counter (`handseq`);
- `state`    hash: started, ended, locked ("1"/"0") and origin (media node id);
- `media`    hash participant id -> JSON {publish, subscribe}: media node per leg.
Global: `sig:grace` (sorted set "<webinar> <participant> <connection>" by deadline),
`sig:active` (webinars with participants), `sig:replicas` (sorted set of replica ids by
last heartbeat) and `sig:replica:<id>:sessions` (the connections each replica holds, so
that the connections of a replica that died get their grace period too).

Every change commits its public event through the outbox in the same MULTI; changes
that depend on presence WATCH the `conn` hash, which every presence change writes.
"""

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from services.common.audience import STAGE_ROLES
from services.common.events import make_event
from services.common.outbox import Outbox
from services.common.revocations import revoked_key
from services.signaling.protocol import RequestError

GRACE_KEY = "sig:grace"
ACTIVE_KEY = "sig:active"
REPLICAS_KEY = "sig:replicas"
T = TypeVar("T")


def key(webinar_id: str, name: str) -> str:
    return f"sig:{webinar_id}:{name}"


def sessions_key(replica: str) -> str:
    """The connections a replica holds, as "<webinar> <participant> <connection>"."""
    return f"sig:replica:{replica}:sessions"


def _strs(values: Any) -> list[str]:
    """Members as returned by a client with decode_responses=True."""
    return [str(v) for v in values]


@dataclass
class Person:
    id: str
    name: str
    role: str
    joined_at: float = 0.0

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, raw: str | bytes) -> "Person":
        return cls(**json.loads(raw))

    def ref(self, on_stage: bool) -> dict[str, Any]:
        """The participant reference of CONTRACTS.md."""
        return {"id": self.id, "name": self.name, "role": self.role, "on_stage": on_stage}


class Full(Exception):
    """No room for another attendee."""


class Locked(Exception):
    """The room is locked for new attendees."""


class Ended(Exception):
    """The webinar has ended."""


class Revoked(Exception):
    """The participant was removed or rejected."""


@dataclass
class Dropped:
    """A participant who left the room for good, with their media legs."""

    webinar_id: str
    person: Person
    media: dict[str, str | None]


JOIN_LUA = """
-- KEYS: state, revoked, people, attendees, conn, active, sessions, outbox, stage
-- ARGV: pid, role, capacity, session, person, webinar id, sessions member, outbox entry
if redis.call('HGET', KEYS[1], 'ended') == '1' then return 'ended' end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'revoked' end
local present = redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1
if ARGV[2] == 'attendee' and not present then
  if redis.call('HGET', KEYS[1], 'locked') == '1' then return 'locked' end
  if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[3]) then return 'full' end
end
redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
redis.call('SADD', KEYS[6], ARGV[6])
redis.call('SADD', KEYS[7], ARGV[7])
if ARGV[2] == 'attendee' then redis.call('SADD', KEYS[4], ARGV[1]) end
if present then return 'resumed' end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
if ARGV[2] ~= 'attendee' then redis.call('HSET', KEYS[9], ARGV[1], ARGV[5]) end
redis.call('RPUSH', KEYS[8], ARGV[8])
return 'joined'
"""


class _PushCapture:
    """Stands in for a pipeline to capture what `Outbox.stage` would push."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, str]] = []

    def rpush(self, name: str, value: str) -> None:
        self.pushed.append((name, value))


class RoomStore:
    def __init__(self, redis: aioredis.Redis, outbox: Outbox, source: str) -> None:
        self.redis = redis
        self.outbox = outbox
        self.source = source
        self._join_script = redis.register_script(JOIN_LUA)

    def _event(
        self, pipe: Pipeline, event_type: str, webinar_id: str, data: dict[str, Any]
    ) -> None:
        self.outbox.stage(pipe, make_event(event_type, webinar_id, data, self.source))

    async def _watched(self, keys: list[str], body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run `body` in a WATCH/MULTI transaction, retrying when a watched key changed."""
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*keys)
                    result = await body(pipe)
                    if pipe.explicit_transaction:
                        await pipe.execute()
                        self.outbox.notify()
                    return result
                except WatchError:
                    continue

    # presence -----------------------------------------------------------------
    async def join(
        self, webinar_id: str, person: Person, session: str, capacity: int, replica: str
    ) -> bool:
        """Record a connection; True when it resumes a participant already in the room.

        One Lua script (no WATCH retries when hundreds join at once): refuses ended
        webinars, revoked participants, new attendees of a locked or full room.
        """
        person.joined_at = time.time()
        data = {"participant_id": person.id, "name": person.name, "role": person.role,
                "on_stage": person.role in STAGE_ROLES}  # fmt: skip
        outbox_key, entry = self._outbox_entry("participant.joined", webinar_id, data)
        keys = [key(webinar_id, "state"), revoked_key(webinar_id), key(webinar_id, "people"),
                key(webinar_id, "attendees"), key(webinar_id, "conn"), ACTIVE_KEY,
                sessions_key(replica), outbox_key, key(webinar_id, "stage")]  # fmt: skip
        member = f"{webinar_id} {person.id} {session}"
        args: list[str | int] = [person.id, person.role, capacity, session, person.dump(),
                                 webinar_id, member, entry]  # fmt: skip
        outcome = str(await self._join_script(keys=keys, args=args))
        if outcome in self._join_refusals:
            raise self._join_refusals[outcome]
        if outcome == "joined":
            self.outbox.notify()
        return outcome == "resumed"

    _join_refusals: dict[str, type[Exception]] = {
        "ended": Ended, "revoked": Revoked, "locked": Locked, "full": Full,
    }  # fmt: skip

    def _outbox_entry(self, event_type: str, webinar_id: str, data: dict[str, Any]
                      ) -> tuple[str, str]:  # fmt: skip
        """The (list key, entry) the outbox would stage for this event, for a Lua script."""
        capture = _PushCapture()
        self._event(cast(Pipeline, capture), event_type, webinar_id, data)
        return capture.pushed[0]

    async def disconnected(self, webinar_id: str, pid: str, session: str, grace: float) -> bool:
        """Start the grace period if this was the participant's latest connection."""
        if await self.redis.hget(key(webinar_id, "conn"), pid) != session:
            return False
        member = f"{webinar_id} {pid} {session}"
        await self.redis.zadd(GRACE_KEY, {member: time.time() + grace})
        return True

    async def untrack(self, replica: str, webinar_id: str, pid: str, session: str) -> None:
        await self.redis.srem(sessions_key(replica), f"{webinar_id} {pid} {session}")

    async def replica_alive(self, replica: str) -> bool:
        """Heartbeat of a replica; True when it was not registered (first beat, or retired)."""
        return bool(await self.redis.zadd(REPLICAS_KEY, {replica: time.time()}))

    async def retire(self, replica: str, grace: float) -> int:
        """A replica is gone: its remaining connections start their grace period."""
        if not await self.redis.zrem(REPLICAS_KEY, replica):
            return 0  # another replica took it
        found = 0
        for member in _strs(await self.redis.smembers(sessions_key(replica))):
            webinar_id, pid, session = member.split(" ", 2)
            found += await self.disconnected(webinar_id, pid, session, grace)
        await self.redis.delete(sessions_key(replica))
        return found

    async def orphans(self, dead_after: float, grace: float) -> int:
        """Retire the replicas that stopped beating."""
        cutoff = time.time() - dead_after
        dead = _strs(await self.redis.zrangebyscore(REPLICAS_KEY, "-inf", cutoff))
        return sum([await self.retire(replica, grace) for replica in dead])

    async def sweep(self) -> list[Dropped]:
        """Participants whose grace period ran out leave the room (any replica may sweep)."""
        due = _strs(await self.redis.zrangebyscore(GRACE_KEY, "-inf", time.time(), 0, 200))
        dropped = []
        for member in due:
            if not await self.redis.zrem(GRACE_KEY, member):
                continue  # another replica took it
            webinar_id, pid, session = member.split(" ", 2)
            try:
                gone = await self._drop(webinar_id, pid, session, reason="disconnected")
            except RedisError:
                await self.redis.zadd(GRACE_KEY, {member: time.time()})  # try again later
                raise
            if gone is not None:
                dropped.append(gone)
        return dropped

    async def remove(self, webinar_id: str, pid: str, by: str) -> Dropped:
        """Take a participant out of the room and revoke their token."""
        gone = await self._drop(webinar_id, pid, None, reason="removed", by=by)
        if gone is None:
            raise RequestError("not_found", f"participant {pid} is not in this webinar")
        return gone

    async def _drop(
        self, webinar_id: str, pid: str, session: str | None, reason: str, by: str | None = None
    ) -> Dropped | None:
        conn_k, people_k = key(webinar_id, "conn"), key(webinar_id, "people")
        hands_k, media_k = key(webinar_id, "hands"), key(webinar_id, "media")

        async def body(pipe: Pipeline) -> Dropped | None:
            if session is not None and await pipe.hget(conn_k, pid) != session:
                return None  # reconnected meanwhile
            raw = await pipe.hget(people_k, pid)
            if raw is None:
                return None
            person = Person.load(raw)
            queue = _strs(await pipe.zrange(hands_k, 0, -1))
            media = json.loads(await pipe.hget(media_k, pid) or "{}")
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hdel(people_k, pid)
            pipe.hdel(key(webinar_id, "stage"), pid)
            pipe.hdel(conn_k, pid)
            pipe.hdel(media_k, pid)
            pipe.srem(key(webinar_id, "attendees"), pid)
            pipe.srem(key(webinar_id, "promoted"), pid)
            pipe.zrem(hands_k, pid)
            base = {"participant_id": pid, "name": person.name, "role": person.role}
            if by is not None:
                pipe.sadd(revoked_key(webinar_id), pid)
                self._event(pipe, "participant.removed", webinar_id, {**base, "by": by})
            if pid in queue:
                hands = await self._names(webinar_id, [h for h in queue if h != pid])
                data = {**base, "reason": reason, "hands": hands, "audience": "hosts"}
                self._event(pipe, "hand.lowered", webinar_id, data)
            self._event(pipe, "participant.left", webinar_id, {**base, "reason": reason})
            return Dropped(webinar_id, person, media)

        return await self._watched([conn_k], body)

    async def end(self, webinar_id: str, by: str) -> list[Dropped]:
        """End the webinar: everyone leaves the room; later joins are refused."""
        conn_k, people_k, state_k = (key(webinar_id, n) for n in ("conn", "people", "state"))

        async def body(pipe: Pipeline) -> list[Dropped]:
            if await pipe.hget(state_k, "ended") == "1":
                raise RequestError("conflict", "the webinar has already ended")
            people = [Person.load(r) for r in (await pipe.hgetall(people_k)).values()]
            media = await pipe.hgetall(key(webinar_id, "media"))
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(state_k, mapping={"ended": "1", "started": "0"})
            self._event(pipe, "webinar.ended", webinar_id, {"by": by, "reason": "ended by host"})
            for p in people:
                data = {"participant_id": p.id, "name": p.name, "role": p.role, "reason": "ended"}
                self._event(pipe, "participant.left", webinar_id, data)
            names = ("people", "stage", "conn", "attendees", "promoted", "hands", "media")
            pipe.delete(*(key(webinar_id, n) for n in names))
            pipe.srem(ACTIVE_KEY, webinar_id)
            return [Dropped(webinar_id, p, json.loads(media.get(p.id, "{}"))) for p in people]

        return await self._watched([conn_k, state_k], body)

    # queries ------------------------------------------------------------------
    async def person(self, webinar_id: str, pid: str) -> Person | None:
        raw = await self.redis.hget(key(webinar_id, "people"), pid)
        return Person.load(raw) if raw else None

    async def is_revoked(self, webinar_id: str, pid: str) -> bool:
        return bool(await self.redis.sismember(revoked_key(webinar_id), pid))

    async def is_promoted(self, webinar_id: str, pid: str) -> bool:
        return bool(await self.redis.sismember(key(webinar_id, "promoted"), pid))

    async def state(self, webinar_id: str) -> dict[str, str]:
        state = await self.redis.hgetall(key(webinar_id, "state"))
        return {str(k): str(v) for k, v in state.items()}

    async def stage(self, webinar_id: str) -> list[dict[str, Any]]:
        people = await self.redis.hgetall(key(webinar_id, "stage"))
        promoted = await self.redis.smembers(key(webinar_id, "promoted"))
        stage = []
        for raw in people.values():
            p = Person.load(raw)
            if p.role in STAGE_ROLES or p.id in promoted:
                stage.append({"participant_id": p.id, "name": p.name, "role": p.role,
                              "promoted": p.id in promoted, "joined_at": p.joined_at})  # fmt: skip
        return sorted(stage, key=lambda s: s["joined_at"])

    async def people(self, webinar_id: str) -> list[dict[str, Any]]:
        """Everyone present (or within their reconnect grace), in order of arrival."""
        promoted = set(_strs(await self.redis.smembers(key(webinar_id, "promoted"))))
        people = [
            Person.load(raw)
            for raw in (await self.redis.hgetall(key(webinar_id, "people"))).values()
        ]
        return [
            {**p.ref(p.role in STAGE_ROLES or p.id in promoted), "joined_at": p.joined_at}
            for p in sorted(people, key=lambda p: p.joined_at)
        ]

    async def hands(self, webinar_id: str) -> list[dict[str, str]]:
        queue = _strs(await self.redis.zrange(key(webinar_id, "hands"), 0, -1))
        return await self._names(webinar_id, queue)

    async def _names(self, webinar_id: str, pids: list[str]) -> list[dict[str, str]]:
        if not pids:
            return []
        raws = await self.redis.hmget(key(webinar_id, "people"), pids)
        return [
            {"participant_id": pid, "name": Person.load(raw).name if raw else ""}
            for pid, raw in zip(pids, raws, strict=True)
        ]

    # webinar state ------------------------------------------------------------
    async def start(self, webinar_id: str, by: str) -> None:
        state_k = key(webinar_id, "state")

        async def body(pipe: Pipeline) -> None:
            state = await pipe.hgetall(state_k)
            if state.get("ended") == "1":
                raise RequestError("conflict", "the webinar has ended")
            if state.get("started") == "1":
                raise RequestError("conflict", "the webinar has already started")
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(state_k, "started", "1")
            self._event(pipe, "webinar.started", webinar_id, {"by": by})

        await self._watched([state_k], body)

    async def set_locked(self, webinar_id: str, locked: bool, by: str) -> bool:
        """Lock or unlock the room; False when it already was."""
        state_k = key(webinar_id, "state")
        value = "1" if locked else "0"

        async def body(pipe: Pipeline) -> bool:
            if (await pipe.hget(state_k, "locked") or "0") == value:
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(state_k, "locked", value)
            event = "room.locked" if locked else "room.unlocked"
            self._event(pipe, event, webinar_id, {"by": by})
            return True

        return await self._watched([state_k], body)

    # hands and stage ----------------------------------------------------------
    async def raise_hand(self, webinar_id: str, person: Person) -> int:
        """Queue a raised hand; returns its 1-based position (same if already raised)."""
        hands_k = key(webinar_id, "hands")
        seq = int(await self.redis.incr(key(webinar_id, "handseq")))

        async def body(pipe: Pipeline) -> int:
            queue = _strs(await pipe.zrange(hands_k, 0, -1))
            if person.id in queue:
                return queue.index(person.id) + 1
            queue.append(person.id)
            hands = await self._names(webinar_id, queue)
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.zadd(hands_k, {person.id: seq})
            data = {"participant_id": person.id, "name": person.name, "position": len(queue),
                    "hands": hands, "audience": "hosts"}  # fmt: skip
            self._event(pipe, "hand.raised", webinar_id, data)
            return len(queue)

        return await self._watched([hands_k, key(webinar_id, "conn")], body)

    async def lower_hand(self, webinar_id: str, pid: str, by: str) -> bool:
        """Take a hand out of the queue; False when it was not raised."""
        hands_k = key(webinar_id, "hands")

        async def body(pipe: Pipeline) -> bool:
            queue = _strs(await pipe.zrange(hands_k, 0, -1))
            if pid not in queue:
                return False
            person = await self.person(webinar_id, pid)
            hands = await self._names(webinar_id, [h for h in queue if h != pid])
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.zrem(hands_k, pid)
            data = {"participant_id": pid, "name": person.name if person else "", "by": by,
                    "reason": "lowered", "hands": hands, "audience": "hosts"}  # fmt: skip
            self._event(pipe, "hand.lowered", webinar_id, data)
            return True

        return await self._watched([hands_k], body)

    async def set_promoted(self, webinar_id: str, pid: str, promoted: bool, by: str) -> Person:
        """Move an attendee onto the stage or back to the audience."""
        conn_k, hands_k = key(webinar_id, "conn"), key(webinar_id, "hands")
        promoted_k = key(webinar_id, "promoted")

        async def body(pipe: Pipeline) -> Person:
            raw = await pipe.hget(key(webinar_id, "people"), pid)
            if raw is None:
                raise RequestError("not_found", f"participant {pid} is not in this webinar")
            person = Person.load(raw)
            if person.role != "attendee":
                raise RequestError("conflict", f"a {person.role} is always on stage")
            if bool(await pipe.sismember(promoted_k, pid)) == promoted:
                where = "on stage" if promoted else "not on stage"
                raise RequestError("conflict", f"{person.name} is already {where}")
            queue = _strs(await pipe.zrange(hands_k, 0, -1))
            pipe.multi()  # type: ignore[no-untyped-call]
            base = {"participant_id": pid, "name": person.name, "by": by}
            if promoted:
                pipe.sadd(promoted_k, pid)
                pipe.hset(key(webinar_id, "stage"), pid, raw)
                self._event(pipe, "participant.promoted", webinar_id, base)
            else:
                pipe.srem(promoted_k, pid)
                pipe.hdel(key(webinar_id, "stage"), pid)
                self._event(pipe, "participant.demoted", webinar_id, base)
            if pid in queue:
                pipe.zrem(hands_k, pid)
                hands = await self._names(webinar_id, [h for h in queue if h != pid])
                data = {**base, "reason": "promoted" if promoted else "demoted",
                        "hands": hands, "audience": "hosts"}  # fmt: skip
                self._event(pipe, "hand.lowered", webinar_id, data)
            return person

        return await self._watched([conn_k, hands_k, promoted_k], body)

    async def muted(self, webinar_id: str, pid: str, kind: str, muted: bool, by: str) -> None:
        data = {"participant_id": pid, "kind": kind, "muted": muted, "by": by}
        await self.outbox.add(make_event("participant.muted", webinar_id, data, self.source))

    # media --------------------------------------------------------------------
    async def media(self, webinar_id: str, pid: str) -> dict[str, str | None]:
        raw = await self.redis.hget(key(webinar_id, "media"), pid)
        media: dict[str, str | None] = json.loads(raw) if raw else {}
        return media

    async def set_media(self, webinar_id: str, pid: str, leg: str, node: str | None) -> None:
        media = await self.media(webinar_id, pid)
        media[leg] = node
        await self.redis.hset(key(webinar_id, "media"), pid, json.dumps(media))

    async def origin(self, webinar_id: str) -> str | None:
        origin = await self.redis.hget(key(webinar_id, "state"), "origin")
        return None if origin is None else str(origin)

    async def claim_origin(self, webinar_id: str, node: str, replacing: str | None) -> str:
        """Set the origin node unless another replica set a different one first."""
        state_k = key(webinar_id, "state")

        async def body(pipe: Pipeline) -> str:
            raw = await pipe.hget(state_k, "origin")
            current = None if raw is None else str(raw)
            if current is not None and current != replacing:
                return current
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(state_k, "origin", node)
            return node

        return await self._watched([state_k], body)

    async def clear_origin(self, webinar_id: str, node: str) -> bool:
        state_k = key(webinar_id, "state")

        async def body(pipe: Pipeline) -> bool:
            if await pipe.hget(state_k, "origin") != node:
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hdel(state_k, "origin")
            return True

        return await self._watched([state_k], body)

    async def active_webinars(self) -> list[str]:
        return _strs(await self.redis.smembers(ACTIVE_KEY))

    async def media_node_up(self, webinar_id: str, node: str) -> None:
        data = {"node_id": node}
        await self.outbox.add(make_event("media.node.up", webinar_id, data, self.source))

    async def webinars_on_node(self, node: str) -> list[str]:
        """Active webinars whose origin is `node` or with a participant on it."""
        found = []
        for webinar_id in _strs(await self.redis.smembers(ACTIVE_KEY)):
            if await self.origin(webinar_id) == node:
                found.append(webinar_id)
                continue
            legs = await self.redis.hvals(key(webinar_id, "media"))
            if any(node in json.loads(raw).values() for raw in legs):
                found.append(webinar_id)
        return found

    async def forget_node(self, webinar_id: str, node: str) -> None:
        """Media legs on a node that went down are gone."""
        media_k = key(webinar_id, "media")
        for pid, raw in (await self.redis.hgetall(media_k)).items():
            legs = json.loads(raw)
            if node in legs.values():
                legs = {leg: (None if n == node else n) for leg, n in legs.items()}
                await self.redis.hset(media_k, pid, json.dumps(legs))

    async def media_node_down(self, webinar_id: str, node: str, origin: bool) -> None:
        data = {"node_id": node, "origin": origin}
        await self.outbox.add(make_event("media.node.down", webinar_id, data, self.source))
