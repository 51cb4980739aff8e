"""arq's worker with one change: it claims the jobs it reads in one Redis round trip.

arq claims each job it found on its queue with WATCH, EXISTS, ZSCORE and MULTI/PSETEX/EXEC:
four round trips per job, which were the largest part of a worker's Redis traffic and CPU.
`ClaimingWorker.start_jobs` claims every job a read found, up to its free slots, with one
script that makes the same checks atomically (the job is still queued and due, and no worker
holds it) and sets the same in-progress key. Everything else, from running a job to finishing
it, is arq's own.

The in-progress key lives for the worker's lease (worker/leases.py renews it) rather than for
arq's longest job timeout plus 10 s, and holds the worker's id, so RedisInsight shows who runs
a job. A claim retried after a lost reply finds the key its first try set and takes the job
again, instead of leaving it held by nobody until the lease runs out.
"""

from collections.abc import Sequence
from typing import Any

import redis.asyncio
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

CLAIM_SCRIPT = """
local now, lease, holder, free = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local claimed = {}
for index = 2, #KEYS do
  if #claimed >= 2 * free then break end
  local job_id = ARGV[index + 3]
  local score = redis.call('ZSCORE', KEYS[1], job_id)
  if score and tonumber(score) <= now then
    local held_by = redis.call('GET', KEYS[index])
    if not held_by or held_by == holder then
      redis.call('SET', KEYS[index], holder, 'PX', lease)
      claimed[#claimed + 1] = job_id
      claimed[#claimed + 1] = score
    end
  end
end
return claimed
"""
"""KEYS: the queue, then each job's in-progress key; ARGV: now (ms), the lease (ms), this
worker's id, the free slots, then the job ids. Returns the claimed ids, each with its score."""


class JobClaims:
    """Claims queued jobs for one worker: `holder` is its id, `lease_seconds` its lease."""

    def __init__(
        self, client: redis.asyncio.Redis, queue_name: str, holder: str, lease_seconds: float
    ) -> None:
        self._script = client.register_script(CLAIM_SCRIPT)
        self._queue_name = queue_name
        self._holder = holder
        self._lease_ms = int(lease_seconds * 1000)

    async def claim(self, job_ids: Sequence[str], free: int) -> list[tuple[str, int]]:
        """The jobs among `job_ids` that are due and held by no other worker, at most `free`
        of them in the queue's order, each with its queue score; they are now held here."""
        if free <= 0 or not job_ids:
            return []
        claimed = await self._script(
            keys=[self._queue_name, *(in_progress_key_prefix + job_id for job_id in job_ids)],
            args=[timestamp_ms(), self._lease_ms, self._holder, free, *job_ids],
        )
        return [
            (job_id.decode(), int(float(score)))
            for job_id, score in zip(claimed[::2], claimed[1::2], strict=True)
        ]


class ClaimingWorker(Worker):
    def __init__(self, *, worker_id: str, lease_seconds: float, **options: Any) -> None:
        super().__init__(**options)
        self.worker_id = worker_id
        # For the startup hook (worker/main.py), which sees only the context.
        self.ctx["worker_id"] = worker_id
        self._claims = JobClaims(self.pool, self.queue_name, worker_id, lease_seconds)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim the due jobs among `job_ids` that no worker holds, as many as there are free
        slots, and start each as arq's own `start_jobs` does."""
        if not self.allow_pick_jobs:
            # The worker is stopping: the read that found these began before, while it waited
            # for a wake-up (worker/pool.py).
            return
        # Not the jobs running here, which the claim would give this worker again; a job whose
        # attempt here has ended (a retry now due) may be claimed again.
        candidates = [
            job_id for job_id in map(bytes.decode, job_ids) if not self._running_here(job_id)
        ]
        for job_id, score in await self._claims.claim(
            candidates, free=self.max_jobs - self.job_counter
        ):
            # Never waits: arq's semaphore has a slot for every job below max_jobs.
            await self.sem.acquire()
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    def _running_here(self, job_id: str) -> bool:
        task = self.tasks.get(job_id)
        return task is not None and not task.done()
