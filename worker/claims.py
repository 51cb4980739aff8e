"""How a worker takes jobs off its queues: one script per turn reads the due jobs of every queue
it serves, claims as many as it has free slots, and hands back what arq's `run_job` would read
in a transaction of its own per job (the envelope and the delivery count).

A claimed job's score moves to the end of its lease, so a read of the queue never sees the jobs
that run (a worker busy with 100 jobs reads only the ones waiting), and a job whose worker died
is due again as its lease runs out, with no sweep. While the job runs, Leases (worker/leases.py)
moves its score and renews its in-progress key together; its end takes it off the queue.
"""

import secrets
from collections.abc import Sequence
from typing import NamedTuple

import redis.asyncio
from arq.utils import timestamp_ms

from shared.keys import arq_job_key, claim_receipt_key, in_progress_key, retry_key

MOST_PER_CLAIM = 1000
"""Jobs one claim takes at most (Lua's `unpack` takes some thousands of values)."""

RETRY_KEY_SECONDS = 88_400
"""arq's TTL of a job's delivery count (`run_job` sets the same)."""

CLAIM_SCRIPT = """
local now, lease, holder, free = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local token, job_prefix, progress_prefix, retry_prefix = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local retry_ttl, receipt = ARGV[9], ARGV[10]
-- The same claim sent again (its reply was lost, and the connection retried it): the jobs it
-- took are not due any more, so answer what the first one took.
local previous = redis.call('GET', receipt)
if previous then
  local kept = cjson.decode(previous)
  if kept[1] == token then
    local answer = {0, 0}
    for queue = 1, #KEYS do answer[#answer + 1] = 0 end
    for index = 2, #kept, 3 do
      local job_id = kept[index]
      answer[#answer + 1] = job_id
      answer[#answer + 1] = kept[index + 1]
      answer[#answer + 1] = kept[index + 2]
      answer[#answer + 1] = tonumber(redis.call('GET', retry_prefix .. job_id) or '1')
      answer[#answer + 1] = redis.call('GET', job_prefix .. job_id)
    end
    return answer
  end
end
local found = {}
local longest = 0
for queue = 1, #KEYS do
  found[queue] = redis.call(
    'ZRANGEBYSCORE', KEYS[queue], '-inf', now, 'WITHSCORES', 'LIMIT', 0, free + 1)
  if #found[queue] > longest then longest = #found[queue] end
end
local answer = {0, 0}
for queue = 1, #KEYS do answer[#answer + 1] = #found[queue] / 2 end
local receipt_entries = {token}
local claimed, left, held = 0, 0, 0
local lease_end = now + lease
local moved = {}
local envelope_keys = {}
for queue = 1, #KEYS do moved[queue] = {} end
-- One job of each queue in turn, in the order the queues are given.
for position = 1, longest, 2 do
  for queue = 1, #KEYS do
    local job_id = found[queue][position]
    if job_id then
      if claimed >= free then
        left = left + 1
      else
        local progress = progress_prefix .. job_id
        if redis.call('SET', progress, holder, 'NX', 'PX', lease) then
          claimed = claimed + 1
          table.insert(moved[queue], lease_end)
          table.insert(moved[queue], job_id)
          envelope_keys[claimed] = job_prefix .. job_id
          local retry = retry_prefix .. job_id
          local try = 1
          if not redis.call('SET', retry, 1, 'NX', 'EX', retry_ttl) then
            try = redis.call('INCR', retry)
          end
          local score = found[queue][position + 1]
          answer[#answer + 1] = job_id
          answer[#answer + 1] = queue
          answer[#answer + 1] = score
          answer[#answer + 1] = try
          answer[#answer + 1] = false -- the envelope, read below
          receipt_entries[#receipt_entries + 1] = job_id
          receipt_entries[#receipt_entries + 1] = queue
          receipt_entries[#receipt_entries + 1] = score
        else
          held = held + 1
        end
      end
    end
  end
end
answer[1], answer[2] = left, held
if claimed > 0 then
  -- One ZADD per queue and one MGET, not one of each per job.
  for queue = 1, #KEYS do
    if #moved[queue] > 0 then redis.call('ZADD', KEYS[queue], 'XX', unpack(moved[queue])) end
  end
  local envelopes = redis.call('MGET', unpack(envelope_keys))
  local first = 2 + #KEYS
  for index = 1, claimed do answer[first + 5 * index] = envelopes[index] end
  redis.call('SET', receipt, cjson.encode(receipt_entries), 'PX', lease)
end
return answer
"""
"""KEYS: the queues to read, in the order their jobs take turns. ARGV: now (ms), the lease
(ms), this worker's id, its free slots, this claim's token, arq's key prefixes (job, in
progress, retry), the retry count's TTL, this worker's receipt key. Returns the due jobs left
for want of a slot, those held by another worker, how many due jobs each queue had (at most
`free` + 1), then five entries per claimed job: its id,
its queue's position in KEYS, its score (when it was due), its delivery count and its envelope
(false when it is gone: the job expired or was cancelled)."""


class Claimed(NamedTuple):
    """A job this worker now holds, with what arq's `run_job` reads of it."""

    job_id: str
    queue: str
    score: int
    """When it was due (ms), as arq's queue scored it."""
    job_try: int
    envelope: bytes | None


class Claim(NamedTuple):
    jobs: list[Claimed]
    left: int
    """Due jobs not taken for want of a free slot."""
    held: int
    """Due jobs a worker still holds: its lease was about to be renewed."""
    found: list[int]
    """How many due jobs each queue read had (at most one more than the free slots)."""


class JobClaims:
    """Claims queued jobs for one worker: `holder` is its id, `lease_seconds` its lease."""

    def __init__(self, client: redis.asyncio.Redis, holder: str, lease_seconds: float) -> None:
        self._script = client.register_script(CLAIM_SCRIPT)
        self._holder = holder
        self._lease_ms = int(lease_seconds * 1000)
        self._receipt = claim_receipt_key(holder)

    async def claim(self, queues: Sequence[str], free: int) -> Claim:
        """Claim up to `free` due jobs of `queues` (keys), taking one of each queue in turn."""
        if free <= 0 or not queues:
            return Claim([], 0, 0, [0] * len(queues))
        free = min(free, MOST_PER_CLAIM)
        reply = await self._script(
            keys=list(queues),
            args=[
                timestamp_ms(),
                self._lease_ms,
                self._holder,
                free,
                secrets.token_hex(8),
                arq_job_key(""),
                in_progress_key(""),
                retry_key(""),
                RETRY_KEY_SECONDS,
                self._receipt,
            ],
        )
        left, held = int(reply[0]), int(reply[1])
        found, entries = (
            [int(count) for count in reply[2 : 2 + len(queues)]],
            reply[2 + len(queues) :],
        )
        jobs = [
            Claimed(
                entries[index].decode(),
                queues[int(entries[index + 1]) - 1],
                int(float(entries[index + 2])),
                int(entries[index + 3]),
                entries[index + 4] or None,
            )
            for index in range(0, len(entries), 5)
        ]
        return Claim(jobs, left, held, found)
