"""Everything in jobcache that depends on arq's private internals, in one module.

jobcache runs arq's own Worker with three changes, each made through parts of arq that arq
does not document as public. What this module relies on (arq 0.28; `check_arq_internals`
fails loudly at a worker's start, and in the tests, if the installed arq lacks any of it):

- `Worker._poll_iteration` reads the queue with `self.pool.zrangebyscore(queue_name, ...,
  max=now)` and hands the ids to `self.start_jobs(job_ids)`. QueueWaitingRedis overrides
  that `zrangebyscore` to read every queue the worker serves and to wait for a wake-up
  instead of polling; were arq to read the queue another way, an idle worker would read one
  queue only, every `poll_delay` (1 ms): about 1,000 reads a second per idle worker.
- `Worker.queue_name`, an attribute arq's `__init__` sets and `run_job`, `finish_job` and
  `finish_failed_job` read to take a job off its queue or put a retry back on it.
  ClaimingWorker makes it a property whose value, inside each job's task, is that job's
  queue (a context variable set as the task is created).
- `Worker.start_jobs(job_ids)`, which ClaimingWorker replaces, with the Worker's `sem` (a
  semaphore of max_jobs + 1 slots), `job_counter`, `max_jobs`, `tasks` (job id to task),
  `allow_pick_jobs` (False once SIGTERM's grace began), `loop`, `pool`, `queue_name`, `ctx`,
  `run_job(job_id, score)` and `_release_sem_dec_counter_on_complete()`.
- `Worker.run`, which runs `main()` then `self.close()`; ClaimingWorker replaces `close` (with
  arq's `_handle_signals`, `handle_sig`, `_pool`, `health_check_key` and `on_shutdown`),
  bounds `finish_job` once the worker stops, and is told that the grace of running jobs is
  over through `on_stop`, which arq's `handle_sig` and `_wait_for_tasks_to_complete` call.
- The in-progress key `arq:in-progress:<id>` (arq.constants.in_progress_key_prefix), which arq's
  claim sets and `finish_job` deletes when the job ends; ClaimingWorker sets it to the worker's
  id for the worker's lease, and Leases renews it while the job runs.

1. The claim. arq claims each job it found on its queue with WATCH, EXISTS, ZSCORE and
   MULTI/PSETEX/EXEC: four round trips per job, which were the largest part of a worker's
   Redis traffic and CPU. `ClaimingWorker.start_jobs` claims every job a read found, up to its
   free slots, with one script that makes the same checks atomically (the job is still queued
   and due, and no worker holds it) and sets the same in-progress key.
2. The lease. arq's in-progress key lives for the longest timeout of any job type plus 10 s;
   only when it expires may another worker take the job. Here it lives for the worker's lease
   (WORKER_LEASE) and holds the worker's id, so RedisInsight shows who runs a job, and Leases
   renews it while the job runs: a dead worker's jobs are free again within seconds. A claim
   retried after a lost reply finds the key its first try set and takes the job again,
   instead of leaving it held by nobody until the lease runs out.
3. The wait. An idle worker waits for a wake-up that the api publishes on enqueue, naming the
   job (or for WORKER_FALLBACK_POLL, so a lost wake-up only delays a job), then hands arq the
   jobs the wake-ups named, or reads again: idle workers cost Redis a couple of commands per
   fallback period, and a new job is picked up at once. A worker whose last claim left due
   jobs for want of a slot waits LEFT_BEHIND_RECHECK only: a batch's jobs share one wake-up.
4. The queues. arq's Worker serves one queue; this one serves every queue of WORKER_QUEUES
   with one set of slots. Each read takes the due jobs of every queue in one round trip and
   interleaves them (the first of each queue, then the second of each...), starting with the
   next queue at each read, so the free slots go to every queue with work in turn and a busy
   queue never starves another. A queue a read found empty is read again when a wake-up names
   it, or at the next fallback read, so a quiet queue costs a busy worker nothing.
5. The stop. arq's close waits for every write it makes, and the worker's clients wait out a
   Redis outage: a worker stopped while Redis was down waited until Redis came back. Once the
   grace of running jobs is over, the writes of the stop (a job put back on its queue, arq's
   health key, the on_shutdown hook's) share one deadline (worker/stopping.py); a job whose
   end could not be written by then is left to its lease, and the process's last step cancels
   whatever still waits.
"""

import asyncio
import inspect
import itertools
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

import redis.asyncio
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

from shared.connections import REDIS_FAILURES
from shared.keys import in_progress_key
from shared.outages import ride_out_outages
from shared.subscriptions import Subscription
from worker.stopping import CANCEL_WAIT, StopDeadline, cancel_leftovers

logger = logging.getLogger(__name__)

LEFT_BEHIND_RECHECK = 0.005
"""Seconds a worker that left due jobs for want of a slot waits for a wake-up before it reads
the queue again."""

WORKER_ATTRIBUTES = (
    "start_jobs",
    "run_job",
    "sem",
    "job_counter",
    "max_jobs",
    "tasks",
    "allow_pick_jobs",
    "loop",
    "pool",
    "queue_name",
    "ctx",
    "_release_sem_dec_counter_on_complete",
    "finish_job",
    "on_stop",
    "on_shutdown",
    "handle_sig",
    "health_check_key",
    "_handle_signals",
    "_pool",
)
"""What ClaimingWorker uses of an arq Worker instance."""


def check_arq_internals(worker: Worker) -> None:
    """Raise RuntimeError naming every internal of arq this module relies on that the installed
    arq lacks: better a worker that refuses to start than one that polls Redis 1,000 times a
    second or claims jobs twice."""
    missing = [name for name in WORKER_ATTRIBUTES if not hasattr(worker, name)]
    for method, calls in (
        ("__init__", ("self.queue_name = queue_name",)),
        ("_poll_iteration", ("self.pool.zrangebyscore(", "self.start_jobs(")),
        ("finish_job", ("in_progress_key_prefix", "self.queue_name")),
        ("finish_failed_job", ("self.queue_name",)),
        ("run", ("self.close()",)),
        ("handle_sig", ("self.on_stop",)),
        ("_wait_for_tasks_to_complete", ("self.on_stop",)),
    ):
        source = _source_of(getattr(Worker, method, None))
        missing += [f"Worker.{method} calling {call}" for call in calls if call not in source]
    if in_progress_key_prefix != "arq:in-progress:":
        missing.append("arq.constants.in_progress_key_prefix == 'arq:in-progress:'")
    if missing:
        raise RuntimeError(
            "the installed arq lacks what worker/arq_internals.py relies on: "
            + ", ".join(missing)
            + "; pin the arq version that pyproject.toml names"
        )


def _source_of(function: object) -> str:
    try:
        return inspect.getsource(function) if function is not None else ""  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


CLAIM_SCRIPT = """
local now, lease, holder, free = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local claimed = {}
for index = 1, #KEYS / 2 do
  if #claimed >= 3 * free then break end
  local queue, in_progress, job_id = KEYS[2 * index - 1], KEYS[2 * index], ARGV[index + 4]
  local score = redis.call('ZSCORE', queue, job_id)
  if score and tonumber(score) <= now then
    local held_by = redis.call('GET', in_progress)
    if not held_by or held_by == holder then
      redis.call('SET', in_progress, holder, 'PX', lease)
      claimed[#claimed + 1] = job_id
      claimed[#claimed + 1] = score
      claimed[#claimed + 1] = queue
    end
  end
end
return claimed
"""
"""KEYS: for each job, its queue and its in-progress key; ARGV: now (ms), the lease (ms),
this worker's id, the free slots, then the job ids. Returns each claimed id with its score and
its queue."""


class JobClaims:
    """Claims queued jobs for one worker: `holder` is its id, `lease_seconds` its lease."""

    def __init__(self, client: redis.asyncio.Redis, holder: str, lease_seconds: float) -> None:
        self._script = client.register_script(CLAIM_SCRIPT)
        self._holder = holder
        self._lease_ms = int(lease_seconds * 1000)

    async def claim(
        self, candidates: Sequence[tuple[str, str]], free: int
    ) -> list[tuple[str, int, str]]:
        """The jobs among `candidates` (each a job id and its queue's key) that are due and
        held by no other worker, at most `free` of them in the order given, each with its
        queue score and queue; they are now held here."""
        if free <= 0 or not candidates:
            return []
        claimed = await self._script(
            keys=[key for job_id, queue in candidates for key in (queue, in_progress_key(job_id))],
            args=[
                timestamp_ms(),
                self._lease_ms,
                self._holder,
                free,
                *(job_id for job_id, _ in candidates),
            ],
        )
        return [
            (job_id.decode(), int(float(score)), queue.decode())
            for job_id, score, queue in zip(claimed[::3], claimed[1::3], claimed[2::3], strict=True)
        ]


_job_queue: ContextVar[str | None] = ContextVar("job_queue", default=None)
"""Inside a job's task: the key of the queue the job came from (ClaimingWorker.queue_name)."""


class ClaimingWorker(Worker):
    """arq's Worker, claiming with JobClaims from every queue its pool (QueueWaitingRedis)
    reads; `check_arq_internals` runs as it is built."""

    def __init__(self, *, worker_id: str, lease_seconds: float, **options: Any) -> None:
        super().__init__(**options)
        check_arq_internals(self)
        self.worker_id = worker_id
        # For the startup hook (worker/main.py), which sees only the context.
        self.ctx["worker_id"] = worker_id
        self._claims = JobClaims(self.pool, worker_id, lease_seconds)
        self._lease_seconds = lease_seconds
        self.stop = StopDeadline()
        # For the runner, which puts back the jobs it was running by the same deadline.
        self.ctx["stop"] = self.stop
        self.on_stop = self._grace_over

    def _grace_over(self, signum: signal.Signals) -> None:
        """arq's on_stop: the running jobs' grace is over (or there was none), and arq has just
        cancelled the jobs still running; their writes begin."""
        self.stop.begin()

    @property
    def queue_name(self) -> str:
        """Inside a job's task, the key of that job's queue (arq's `run_job` and `finish_job`
        take the job off it, or put a retry back on it); elsewhere the first queue served."""
        return _job_queue.get() or self._first_queue

    @queue_name.setter
    def queue_name(self, queue_name: str) -> None:
        self._first_queue = queue_name

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim the due jobs among `job_ids` that no worker holds, as many as there are free
        slots, and start each as arq's own `start_jobs` does."""
        if not self.allow_pick_jobs:
            # The worker is stopping: the read that found these began before, while it waited
            # for a wake-up (QueueWaitingRedis).
            return
        # Not the jobs running here, which the claim would give this worker again; a job whose
        # attempt here has ended (a retry now due) may be claimed again.
        queue_of = getattr(self.pool, "queue_of", None)
        # Each id once: the claim takes a job this worker holds again (a retried claim), so an
        # id given twice (a read and a wake-up, a wake-up heard twice) would start it twice.
        candidates = [
            (job_id, queue_of(job_id) if queue_of else self._first_queue)
            for job_id in dict.fromkeys(map(bytes.decode, job_ids))
            if not self._running_here(job_id)
        ]
        free = self.max_jobs - self.job_counter
        claimed = await self._claims.claim(candidates, free=free)
        note_left_behind = getattr(self.pool, "note_left_behind", None)
        if note_left_behind is not None:
            note_left_behind(len(claimed) == free < len(candidates))
        for job_id, score, queue in claimed:
            # Never waits: arq's semaphore has a slot for every job below max_jobs.
            await self.sem.acquire()
            self.job_counter += 1
            # The task starts with a copy of this context: its queue_name is the job's queue.
            token = _job_queue.set(queue)
            try:
                task = self.loop.create_task(self.run_job(job_id, score))
            finally:
                _job_queue.reset(token)
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def finish_job(self, job_id: str, *args: Any) -> None:
        """arq's end of a job's delivery (it leaves the queue, or stays on it, and its lease is
        let go), bounded by the stop's deadline once the worker stops."""
        if not self.stop.begun:
            return await super().finish_job(job_id, *args)
        if not await self.stop.within(super().finish_job(job_id, *args)):
            logger.warning(
                "job %s: Redis did not answer within %gs as the worker stopped; the job is left "
                "to its lease: another worker runs it once the lease runs out (WORKER_LEASE, %gs)",
                job_id, self.stop.seconds, self._lease_seconds,
            )  # fmt: skip

    def run(self) -> None:
        """arq's run (main, then close), then cancel what still waits (worker/stopping.py)."""
        try:
            super().run()
        finally:
            self.loop.run_until_complete(cancel_leftovers())

    async def close(self) -> None:
        """arq's close: let the jobs' tasks end, delete arq's health key, run the on_shutdown
        hook and close the pool; every wait on Redis ends by the stop's deadline. Called by
        `run` once `main` has ended (after SIGTERM), or by whoever runs the worker."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        self.stop.begin()
        if not self._pool:
            return
        await self._let_jobs_end()
        try:
            await self.stop.within(self.pool.delete(self.health_check_key))
        except REDIS_FAILURES as error:
            logger.debug("could not delete arq's health key: %r", error)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def _let_jobs_end(self) -> None:
        """Wait for the tasks of the jobs arq cancelled, which put them back by the deadline;
        cancel any still waiting a moment after it."""
        tasks = list(self.tasks.values())
        if not tasks:
            return
        remaining = self.stop.remaining()
        _, pending = await asyncio.wait(tasks, timeout=(remaining or 0.0) + CANCEL_WAIT)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_WAIT)
        for job_id, task in self.tasks.items():
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                logger.error("job %s: arq's run of it failed: %r", job_id, error)

    def _running_here(self, job_id: str) -> bool:
        task = self.tasks.get(job_id)
        return task is not None and not task.done()


class Leases:
    """Renews the in-progress key of each job this worker runs, every third of the lease, so
    the first renewal lands well within it (arq deletes the key when the job ends)."""

    def __init__(self, pool: ArqRedis, lease_seconds: float) -> None:
        self._pool = pool
        self._lease_ms = int(lease_seconds * 1000)
        self._held: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def hold(self, job_id: str) -> AsyncIterator[None]:
        """Renew the job's lease while the context is open."""
        self._held.add(job_id)
        try:
            yield
        finally:
            self._held.discard(job_id)

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew(), name="job-leases")

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            if not self._held:
                continue
            try:
                async with self._pool.pipeline(transaction=False) as pipe:
                    for job_id in self._held:
                        pipe.pexpire(in_progress_key(job_id), self._lease_ms)
                    await pipe.execute()
            except REDIS_FAILURES as error:
                logger.warning("could not renew the leases of running jobs: %r", error)


class QueueWaitingRedis(ArqRedis):
    """A worker's arq pool: its read of the queue reads every queue the worker serves and
    waits for a wake-up when it finds nothing new, and its connections wait out a Redis
    restart (shared/outages.py) where arq would exit.

    `queues` are the keys of the queues served, the first being the one arq's Worker is
    given; arq's reads of any other key pass through untouched."""

    def __init__(self, *, queues: Sequence[str], fallback_poll: float, **options: Any) -> None:
        super().__init__(**options)
        ride_out_outages(self.connection_pool)
        if not queues:
            raise ValueError("a worker must serve at least one queue")
        self._queues = list(queues)
        self._fallback_poll = fallback_poll
        self._wakeup = asyncio.Event()
        self._announced: list[bytes] = []
        """Ids of the jobs whose wake-ups came during the current read of the queues."""
        self._queue_of: dict[str, str] = {}
        """The queue of each job the last read found or a wake-up named."""
        self._reading = False
        self._turn = 0
        """Which queue comes first in the next read."""
        self._quiet: set[str] = set()
        """Queues whose last read found nothing due and with no wake-up since."""
        self._full_read_at = 0.0
        self._subscriptions: list[Subscription] = []
        self._last_read: list[bytes] = []
        self._left_behind = False

    def note_left_behind(self, left_behind: bool) -> None:
        """Whether the worker's last claim left due jobs for want of a free slot. If so, and
        the next read finds the same jobs, it waits for a wake-up only LEFT_BEHIND_RECHECK
        before reading again, not WORKER_FALLBACK_POLL: a job's slot frees a moment after its
        end took it off the queue, so a read in between finds what the next one will, and a
        batch's jobs share one wake-up."""
        self._left_behind = left_behind

    def queue_of(self, job_id: str) -> str:
        """The key of the queue on which the last read found the job (ClaimingWorker)."""
        return self._queue_of.get(job_id, self._queues[0])

    async def listen_for_wakeups(self, channels: dict[str, str]) -> None:
        """Subscribe to the wake-up channel of each queue served (`channels`: queue key to its
        channel)."""
        for queue in self._queues:
            subscription = Subscription(self, channels[queue], partial(self._woken, queue))
            await subscription.start()
            self._subscriptions.append(subscription)

    def _woken(self, queue: str, job_id: bytes) -> None:
        self._quiet.discard(queue)
        # Kept only while a read waits: a worker busy with max_jobs jobs reads nothing, and
        # the read it makes once a slot frees finds every job queued meanwhile.
        if job_id and self._reading:
            self._announced.append(job_id)
            self._queue_of[job_id.decode()] = queue
        self._wakeup.set()

    async def stop_listening(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()

    @property
    def _listening(self) -> bool:
        return bool(self._subscriptions) and all(s.active for s in self._subscriptions)

    async def zrangebyscore(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        if name != self._queues[0]:
            return await super().zrangebyscore(name, *args, **kwargs)
        if not self._listening:
            return await self._read_queues(*args, everything=True, **kwargs)
        # Cleared before reading: a wake-up that arrives after the read is not lost, and one
        # that came before is for a job this read finds (the api queues, then announces).
        self._wakeup.clear()
        self._announced.clear()
        self._reading = True
        try:
            return await self._read_or_wait(*args, **kwargs)
        finally:
            self._reading = False

    async def _read_queues(
        self, *args: Any, everything: bool = False, **kwargs: Any
    ) -> list[bytes]:
        """The due jobs of the queues served, interleaved: one of each queue in turn, starting
        with the next queue each read, so that the first free slot goes to each in turn.

        A queue whose last read found nothing due is read again once a wake-up names it, or at
        the next read of every queue (`everything`, or WORKER_FALLBACK_POLL after the last):
        a worker serving a busy queue and a quiet one does not read the quiet one each time."""
        now = time.monotonic()
        if everything or now - self._full_read_at >= self._fallback_poll:
            self._full_read_at = now
            self._quiet.clear()
        read = [queue for queue in self._queues if queue not in self._quiet]
        if not read:
            found: list[list[bytes]] = []
        elif len(read) == 1:
            found = [await super().zrangebyscore(read[0], *args, **kwargs)]
        else:
            async with self.pipeline(transaction=False) as pipe:
                for queue in read:
                    pipe.zrangebyscore(queue, *args, **kwargs)
                found = await pipe.execute()
        self._queue_of = {}
        for queue, job_ids in zip(read, found, strict=True):
            if not job_ids:
                self._quiet.add(queue)
            for job_id in job_ids:
                self._queue_of[job_id.decode()] = queue
        if len(found) < 2:
            return found[0] if found else []
        first = self._turn % len(found)
        self._turn += 1
        return [
            job_id
            for turn in itertools.zip_longest(*found[first:], *found[:first])
            for job_id in turn
            if job_id is not None
        ]

    async def _read_or_wait(self, *args: Any, **kwargs: Any) -> list[bytes]:
        job_ids = await self._read_queues(*args, **kwargs)
        if job_ids and job_ids != self._last_read:
            self._last_read = job_ids
            return job_ids
        # Nothing queued, or only the jobs seen last time, which are running (here or on
        # another worker): nothing new to start until a wake-up or the fallback period.
        try:
            async with asyncio.timeout(
                LEFT_BEHIND_RECHECK if self._left_behind and job_ids else self._fallback_poll
            ):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        if self._announced:
            # The jobs the wake-ups named, without reading the queues again: the claim
            # (ClaimingWorker) takes only those still queued and due. Jobs whose wake-ups
            # were lost are found by the read that starts the next call, which also finds
            # nothing new in these (running here or, when another worker won them, there).
            announced, self._announced = self._announced, []
            self._last_read = [*self._last_read, *announced]
            return announced
        # arq computed `max` (now) before the wait; a job queued since has a later score.
        self._last_read = await self._read_queues(
            *args, everything=True, **{**kwargs, "max": timestamp_ms()}
        )
        return self._last_read
