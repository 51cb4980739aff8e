"""The Redis backend of per-key quotas, shared by every api process.

An owner's in-flight key is a sorted set of unfinished job ids, scored by when they stop
counting anyway (a job that never finishes cannot hold a quota forever); its rate key counts
this second's submissions (both named in shared/keys.py). One script checks and counts a whole
batch atomically, in one round trip whatever its size.
"""

import time
from collections.abc import Sequence

import redis.asyncio

from shared.connections import calls_redis
from shared.keys import Keys
from shared.quotas.base import Limits, check_batch_fits, refuse
from shared.records.model import UNFINISHED_RECORD_TTL

ADMIT = """
local now, in_flight, rate, expires = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4])
local count = #ARGV - 4
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if in_flight > 0 and redis.call('ZCARD', KEYS[1]) + count > in_flight then return 1 end
if rate > 0 then
  if tonumber(redis.call('GET', KEYS[2]) or '0') + count > rate then return 2 end
  if redis.call('INCRBY', KEYS[2], count) == count then redis.call('PEXPIRE', KEYS[2], 1000) end
end
if in_flight > 0 then
  for first = 5, #ARGV, 4000 do
    local members = {}
    for index = first, math.min(first + 3999, #ARGV) do
      members[#members + 1] = expires
      members[#members + 1] = ARGV[index]
    end
    redis.call('ZADD', KEYS[1], unpack(members))
  end
  redis.call('PEXPIREAT', KEYS[1], expires)
end
return 0
"""
"""Admits ARGV[5..] (job ids) all or none; a refused batch counts for neither quota."""


class RedisQuotaLedger:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._admit = client.register_script(ADMIT)

    @calls_redis("count jobs against their quotas")
    async def admit_many(self, owner: str, job_ids: Sequence[str], limits: Limits) -> None:
        check_batch_fits(limits, len(job_ids))
        now_ms = int(time.time() * 1000)
        refused = await self._admit(
            keys=[self._keys.in_flight(owner), self._keys.submission_rate(owner)],
            args=[
                now_ms,
                limits.jobs_in_flight,
                limits.submissions_per_second,
                now_ms + UNFINISHED_RECORD_TTL * 1000,
                *job_ids,
            ],
        )
        if refused:
            raise refuse(limits, len(job_ids), in_flight=refused == 1)

    @calls_redis("release a job's quota")
    async def release(self, owner: str, job_id: str) -> None:
        await self._client.zrem(self._keys.in_flight(owner), job_id)

    @calls_redis("release jobs' quotas")
    async def release_many(self, owner: str, job_ids: Sequence[str]) -> None:
        if job_ids:
            await self._client.zrem(self._keys.in_flight(owner), *job_ids)
