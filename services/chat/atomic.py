"""Redis scripts that check, change state and queue the event in one atomic step.

A vote must be counted once and its event must carry the new totals, with many
replicas voting at once. A MULTI cannot branch on a result and WATCH would retry a
thousand concurrent voters over and over, so these few operations run as Lua. The
event is serialised by the shared outbox (`outbox_entry`); the script only swaps an
unguessable placeholder for the totals it computed, then pushes the entry to the outbox.
"""

import json
import uuid
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from services.common.events import CloudEvent
from services.common.outbox import OUTBOX_KEY, Outbox

# KEYS: voters set, outbox. ARGV: participant id, entry, votes placeholder.
# -> the new number of votes, or -1 when this participant already voted.
_UPVOTE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return -1 end
local votes = redis.call('SCARD', KEYS[1])
local entry = string.gsub(ARGV[2], ARGV[3], tostring(votes), 1)
redis.call('RPUSH', KEYS[2], entry)
return votes
"""

_TALLY = """
local function tally(counts_key, voters_key, options)
  local counts = {}
  for i = 0, options - 1 do
    counts[#counts + 1] = tonumber(redis.call('HGET', counts_key, tostring(i)) or '0')
  end
  return '[' .. table.concat(counts, ',') .. ']', redis.call('HLEN', voters_key)
end
local function push(outbox, entry, counts_ph, counts, voters_ph, voters)
  entry = string.gsub(entry, counts_ph, counts, 1)
  entry = string.gsub(entry, voters_ph, tostring(voters), 1)
  redis.call('RPUSH', outbox, entry)
end
"""

# KEYS: open flag, voters hash, counts hash, outbox.
# ARGV: participant id, choices json, option count, entry, counts ph, voters ph, choice...
# -> {voters, counts json}, or -1 (already voted), -2 (poll closed).
_POLL_VOTE = (
    _TALLY
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return -1 end
for i = 7, #ARGV do redis.call('HINCRBY', KEYS[3], ARGV[i], 1) end
local counts, voters = tally(KEYS[3], KEYS[2], tonumber(ARGV[3]))
push(KEYS[4], ARGV[4], ARGV[5], counts, ARGV[6], voters)
return {voters, counts}
"""
)

# KEYS: open flag, polls hash, counts hash, voters hash, outbox.
# ARGV: poll id, closed poll json, option count, entry, counts ph, voters ph.
# -> {voters, counts json}, or -1 when already closed.
_POLL_CLOSE = (
    _TALLY
    + """
if redis.call('DEL', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local counts, voters = tally(KEYS[3], KEYS[4], tonumber(ARGV[3]))
push(KEYS[5], ARGV[4], ARGV[5], counts, ARGV[6], voters)
return {voters, counts}
"""
)

# Sliding window: KEYS: the participant's log. ARGV: window seconds, limit, unique member.
# -> nil when allowed, else the seconds until the next message is allowed.
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return false
"""


class _Capture:
    """Stands in for a pipeline to read the entry `Outbox.stage` would push."""

    def __init__(self) -> None:
        self.entry = ""

    def rpush(self, key: str, value: str) -> None:
        self.entry = value


def outbox_entry(outbox: Outbox, event: CloudEvent) -> str:
    """The outbox's own serialisation of `event`, trace headers included."""
    capture = _Capture()
    outbox.stage(cast(Pipeline, capture), event)
    return capture.entry


def placeholder(name: str) -> str:
    """A token no user text can contain; only letters, digits and `_` (no Lua magic)."""
    return f"__{name}_{uuid.uuid4().hex}__"


class Scripts:
    def __init__(self, redis: aioredis.Redis, outbox: Outbox) -> None:
        self.outbox = outbox
        self._upvote = redis.register_script(_UPVOTE)
        self._poll_vote = redis.register_script(_POLL_VOTE)
        self._poll_close = redis.register_script(_POLL_CLOSE)
        self._rate = redis.register_script(_RATE)

    def _entry(self, event: CloudEvent, *placeholders: str) -> str:
        entry = outbox_entry(self.outbox, event)
        for ph in placeholders:
            entry = entry.replace(f'"{ph}"', ph, 1)
        return entry

    async def upvote(self, voters: str, participant_id: str, event: CloudEvent, ph: str) -> int:
        entry = self._entry(event, ph)
        votes = int(await self._upvote(keys=[voters, OUTBOX_KEY], args=[participant_id, entry, ph]))
        if votes >= 0:
            self.outbox.notify()
        return votes

    async def poll_vote(
        self,
        keys: tuple[str, str, str],
        participant_id: str,
        choices: list[int],
        options: int,
        event: CloudEvent,
        phs: tuple[str, str],
    ) -> Any:
        entry = self._entry(event, *phs)
        args: list[str | int] = [participant_id, json.dumps(choices), options, entry, *phs]
        args += choices
        result = await self._poll_vote(keys=[*keys, OUTBOX_KEY], args=args)
        if isinstance(result, list):
            self.outbox.notify()
        return result

    async def poll_close(
        self,
        keys: tuple[str, str, str, str],
        poll_id: str,
        poll_json: str,
        options: int,
        event: CloudEvent,
        phs: tuple[str, str],
    ) -> Any:
        entry = self._entry(event, *phs)
        args: list[str | int] = [poll_id, poll_json, options, entry, *phs]
        result = await self._poll_close(keys=[*keys, OUTBOX_KEY], args=args)
        if isinstance(result, list):
            self.outbox.notify()
        return result

    async def rate(self, key: str, window: float, limit: int) -> float | None:
        """None when allowed, else seconds to wait."""
        wait = await self._rate(keys=[key], args=[window, limit, uuid.uuid4().hex])
        return None if wait is None else float(wait)
