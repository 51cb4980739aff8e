"""The Redis backend of per-key quotas, shared by every api process.

An owner's in-flight key is a sorted set of unfinished job ids, scored by when they stop
counting anyway (a job that never finishes cannot hold a quota forever); its rate key counts
this second's submissions (both named in shared/keys.py). One script checks and counts
atomically.
"""

import time

import redis.asyncio

from shared.connections import calls_redis
from shared.errors import QuotaExceededError
from shared.keys import Keys
from shared.quotas.base import IN_FLIGHT_REFUSAL, RATE_REFUSAL, Limits
from shared.records.model import UNFINISHED_RECORD_TTL

ADMIT = """
local now, job, in_flight, rate, expires = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]),
    tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if in_flight > 0 and redis.call('ZCARD', KEYS[1]) >= in_flight then return 1 end
if rate > 0 then
  local count = redis.call('INCR', KEYS[2])
  if count == 1 then redis.call('PEXPIRE', KEYS[2], 1000) end
  if count > rate then return 2 end
end
if in_flight > 0 then
  redis.call('ZADD', KEYS[1], expires, job)
  redis.call('PEXPIREAT', KEYS[1], expires)
end
return 0
"""


class RedisQuotaLedger:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._admit = client.register_script(ADMIT)

    @calls_redis("count a job against its quotas")
    async def admit(self, owner: str, job_id: str, limits: Limits) -> None:
        now_ms = int(time.time() * 1000)
        refused = await self._admit(
            keys=[self._keys.in_flight(owner), self._keys.submission_rate(owner)],
            args=[
                now_ms,
                job_id,
                limits.jobs_in_flight,
                limits.submissions_per_second,
                now_ms + UNFINISHED_RECORD_TTL * 1000,
            ],
        )
        if refused == 1:
            raise QuotaExceededError(IN_FLIGHT_REFUSAL.format(limit=limits.jobs_in_flight), 1)
        if refused == 2:
            raise QuotaExceededError(RATE_REFUSAL.format(limit=limits.submissions_per_second), 1)

    @calls_redis("release a job's quota")
    async def release(self, owner: str, job_id: str) -> None:
        await self._client.zrem(self._keys.in_flight(owner), job_id)
