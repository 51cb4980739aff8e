"""The Redis backend of the outbox, on the queue's Redis (it never evicts, so a callback waiting
for its delivery cannot vanish). Each callback is a hash `<ns>:callback:<job id>` (url,
attempts, first attempt, this claim's token, whether it waits for its job) and a member of the
sorted set `<ns>:callbacks` scored by when it is due (ms); a claim moves it a lease ahead. Every
change is one script, one round trip. The api announces a callback it made ready (a cancel) on
`<ns>:callbacks:ready`, which every worker's deliverer hears; a worker's own runner tells its
deliverer in the process. Names and lifetimes are listed in shared/keys.py.
"""

import secrets
import time
from collections.abc import Callable

import redis.asyncio

from shared.callbacks.base import WAIT_RECHECK_MAX, WAIT_RECHECK_MIN, ClaimedCallback, Claims
from shared.connections import calls_redis
from shared.keys import Keys, in_progress_key
from shared.replication import ReplicaAcks, until_replicated
from shared.subscriptions import Subscription

SCHEDULE_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'url', ARGV[2], 'attempts', 0, 'first_attempt_ms', 0, 'lease', '',
  'waiting', 1, 'scheduled_ms', ARGV[3])
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
return 1
"""
"""KEYS: the sorted set, the callback's hash; ARGV: job id, url, now (ms), first recheck (ms)."""

CLAIM_SCRIPT = """
local zset, now, lease, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token, entry_prefix, held_prefix = ARGV[4], ARGV[5], ARGV[6]
local recheck_min, recheck_max = tonumber(ARGV[7]), tonumber(ARGV[8])
local candidates, seen = {}, {}
for index = 9, #ARGV do
  local id = ARGV[index]
  if not seen[id] and redis.call('HGET', entry_prefix .. id, 'waiting') == '1' then
    seen[id] = true
    candidates[#candidates + 1] = id
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, limit)) do
  if not seen[id] then
    seen[id] = true
    candidates[#candidates + 1] = id
  end
end
local claimed, count = {}, 0
for _, id in ipairs(candidates) do
  if count >= limit then break end
  local entry = entry_prefix .. id
  local fields = redis.call('HMGET', entry, 'url', 'attempts', 'first_attempt_ms', 'scheduled_ms')
  if not fields[1] then
    redis.call('ZREM', zset, id)
  elseif redis.call('EXISTS', held_prefix .. id) == 1 then
    local age = now - tonumber(fields[4])
    redis.call('HSET', entry, 'waiting', 1)
    redis.call('ZADD', zset, now + math.min(math.max(age / 4, recheck_min), recheck_max), id)
  else
    redis.call('HSET', entry, 'lease', token, 'waiting', 0)
    redis.call('ZADD', zset, now + lease, id)
    count = count + 1
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = fields[1]
    claimed[#claimed + 1] = fields[2]
    claimed[#claimed + 1] = fields[3]
  end
end
local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
return {claimed, first[2] or ''}
"""
"""KEYS: the sorted set; ARGV: now (ms), lease (ms), limit, this claim's token, the prefix of
the callbacks' hashes and of arq's in-progress keys, the shortest and longest recheck (ms),
then the ids said ready. A callback whose job a worker still holds (its in-progress key) waits
on. Returns each claimed id with its url, attempts and first attempt (ms, 0 for none), and the
score of the earliest callback left ('' when none is)."""

RESCHEDULE_SCRIPT = """
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'lease', '', 'attempts', ARGV[4], 'first_attempt_ms', ARGV[5],
  'waiting', ARGV[6])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
"""KEYS: the sorted set, the callback's hash; ARGV: job id, the claim's token, when it is due
(ms), attempts, first attempt (ms), whether it waits for its job (1 or 0)."""

SETTLE_SCRIPT = """
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
"""KEYS: the sorted set, the callback's hash; ARGV: job id, the claim's token."""


def milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


class RedisCallbackOutbox:
    """`keep_trying`: a worker writes a callback again until REDIS_MIN_REPLICAS_ACK replicas
    have it (as it does the record of the job's end); the api fails at once (a 503)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        replica_acks: ReplicaAcks | None = None,
        *,
        keep_trying: bool = False,
    ) -> None:
        self._client = client
        self._keys = keys
        self._replica_acks = replica_acks
        self._keep_trying = keep_trying
        self._schedule = client.register_script(SCHEDULE_SCRIPT)
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._reschedule = client.register_script(RESCHEDULE_SCRIPT)
        self._settle = client.register_script(SETTLE_SCRIPT)
        self._ready: set[str] = set()
        """Ids released here since the last claim."""
        self._wake: Callable[[], object] = lambda: None
        self._subscription: Subscription | None = None

    async def schedule(self, job_id: str, url: str) -> None:
        if self._replica_acks is not None and self._keep_trying:
            await until_replicated(
                lambda: self._schedule_once(job_id, url), f"the callback of job {job_id}"
            )
        else:
            await self._schedule_once(job_id, url)

    @calls_redis("put a callback in the outbox")
    async def _schedule_once(self, job_id: str, url: str) -> None:
        keys = [self._keys.callbacks, self._keys.callback(job_id)]
        args: list[str | int] = [
            job_id,
            url,
            milliseconds(time.time()),
            milliseconds(WAIT_RECHECK_MIN),
        ]
        acks = self._replica_acks
        if acks is None:
            await self._schedule(keys=keys, args=args)
            return
        async with self._client.pipeline(transaction=False) as pipeline:
            await self._schedule(keys=keys, args=args, client=pipeline)
            acks.wait_in(pipeline)
            replies = await pipeline.execute()
        acks.check(replies[-1], f"the callback of job {job_id}")

    @calls_redis("announce a callback")
    async def ready(self, job_id: str) -> None:
        await self._client.publish(self._keys.callbacks_ready_channel, job_id)

    def hold(self, job_id: str) -> None:
        """Nothing to do: arq's in-progress key of the job holds its callback (the claim
        script looks at it), in every process."""

    def release(self, job_id: str) -> None:
        self._ready.add(job_id)
        self._wake()

    @calls_redis("claim callbacks")
    async def claim(self, limit: int, lease: float) -> Claims:
        ready = list(self._ready)[:limit]
        self._ready.difference_update(ready)
        token = secrets.token_hex(8)
        claimed, first = await self._claim(
            keys=[self._keys.callbacks],
            args=[
                milliseconds(time.time()),
                milliseconds(lease),
                limit,
                token,
                self._keys.callback(""),
                in_progress_key(""),
                milliseconds(WAIT_RECHECK_MIN),
                milliseconds(WAIT_RECHECK_MAX),
                *ready,
            ],
        )
        return Claims(
            [
                ClaimedCallback(
                    job_id.decode(),
                    url.decode(),
                    int(attempts),
                    int(first_attempt) / 1000 if int(first_attempt) else None,
                    token,
                )
                for job_id, url, attempts, first_attempt in zip(
                    claimed[::4], claimed[1::4], claimed[2::4], claimed[3::4], strict=True
                )
            ],
            float(first) / 1000 if first else None,
        )

    @calls_redis("reschedule a callback")
    async def reschedule(self, claimed: ClaimedCallback, due: float, waiting: bool) -> None:
        first = claimed.first_attempt_at
        await self._reschedule(
            keys=[self._keys.callbacks, self._keys.callback(claimed.job_id)],
            args=[
                claimed.job_id,
                claimed.token,
                milliseconds(due),
                claimed.attempts,
                milliseconds(first) if first is not None else 0,
                int(waiting),
            ],
        )

    @calls_redis("settle a callback")
    async def settle(self, claimed: ClaimedCallback) -> None:
        await self._settle(
            keys=[self._keys.callbacks, self._keys.callback(claimed.job_id)],
            args=[claimed.job_id, claimed.token],
        )

    @calls_redis("listen for ready callbacks")
    async def watch(self, wake: Callable[[], object]) -> None:
        self._wake = wake

        def announced(job_id: bytes) -> None:
            self.release(job_id.decode())

        self._subscription = Subscription(
            self._client, self._keys.callbacks_ready_channel, announced
        )
        await self._subscription.start()

    async def close(self) -> None:
        self._wake = lambda: None
        if self._subscription is not None:
            await self._subscription.close()
