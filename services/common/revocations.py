"""Revoked participants per webinar, shared by registry (rejections) and signaling (removals)."""

import redis.asyncio as aioredis


def revoked_key(webinar_id: str) -> str:
    return f"wb:{webinar_id}:revoked"


async def revoke(redis: aioredis.Redis, webinar_id: str, participant_id: str) -> None:
    await redis.sadd(revoked_key(webinar_id), participant_id)


async def is_revoked(redis: aioredis.Redis, webinar_id: str, participant_id: str) -> bool:
    return bool(await redis.sismember(revoked_key(webinar_id), participant_id))
