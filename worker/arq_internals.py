"""Everything in jobcache that depends on arq's private internals, in one module.

jobcache runs arq's Worker for its loop, its signals and its SIGTERM grace, and replaces how it
takes jobs and ends them. What this module relies on (arq 0.28; `check_arq_internals` fails
loudly at a worker's start, and in the tests, if the installed arq lacks any of it):

- `Worker.main` turns its loop by calling `self._poll_iteration()`, every `poll_delay`;
  ClaimingWorker replaces `_poll_iteration`. Were arq to turn its loop another way, the worker
  would take no job at all.
- The Worker's `job_counter`, `max_jobs`, `tasks` (job id to task), `allow_pick_jobs` (False
  once SIGTERM's grace began), `loop`, `pool`, `ctx`, `functions`, `job_timeout_s`,
  `max_tries`, the hooks `on_job_start`, `on_job_end`, `after_job_end`, the counters
  `jobs_complete`, `jobs_failed`, `jobs_retried` (arq's health line) and `heart_beat()`.
- `Worker.run`, which runs `main()` then `self.close()`; ClaimingWorker replaces `close` (with
  arq's `_handle_signals`, `handle_sig`, `_pool`, `health_check_key` and `on_shutdown`), and
  is told that the grace of running jobs is over through `on_stop`, which arq's `handle_sig`
  and `_wait_for_tasks_to_complete` call (cancelling the jobs' tasks first).
- arq's keys and envelope (arq.constants, `deserialize_job_raw`): the queue (a sorted set),
  `arq:job:<id>`, `arq:in-progress:<id>`, `arq:retry:<id>`; jobs are enqueued as arq's
  `enqueue_job` does, and a job's function receives arq's `ctx` (`job_id`, `job_try`,
  `enqueue_time`, `score`) and may raise arq's `Retry`.

1. The claim (worker/claims.py). arq reads the queue, then claims each job with WATCH, EXISTS,
   ZSCORE and MULTI/PSETEX/EXEC, then reads it in a transaction of its own (GET, INCR, EXPIRE):
   seven round trips per job. Here one script per turn reads the due jobs of every queue
   served, claims as many as there are free slots, and returns their envelopes and delivery
   counts. A claimed job's score moves to the end of its lease, so reads never see running
   jobs, and a dead worker's jobs are due again within WORKER_LEASE.
2. The lease (worker/leases.py). arq's in-progress key lives for the longest timeout of any job
   type plus 10 s. Here it lives for the worker's lease and holds the worker's id, so
   RedisInsight shows who runs a job; Leases renews it, and the job's score, while it runs.
3. The run. One task per job runs the job type's function with arq's `ctx` (arq's `run_job`
   made two more, and `wait_for` and `shield` around them); `Retry` puts it back on its queue
   for later, as arq does.
4. The end (worker/job_ends.py). arq's `finish_job` spends a transaction per job; here the ends
   of the jobs that ended in the same loop turn go in one pipeline.
5. The wait. An idle worker waits for a wake-up that the api publishes on enqueue (or for
   WORKER_FALLBACK_POLL, so a lost wake-up only delays a job); a busy one waits for a slot to
   free. Idle workers cost Redis a couple of commands per fallback period, and a new job is
   picked up at once.
6. The queues. arq's Worker serves one queue; this one serves every queue of WORKER_QUEUES with
   one set of slots. Each claim takes one job of each queue in turn, starting with the next
   queue at each claim, so the free slots go to every queue with work in turn and a busy
   queue never starves another. A queue a claim found empty is read again when a wake-up
   names it, or at the next fallback read, so a quiet queue costs a busy worker nothing.
7. The stop. arq's close waits for every write it makes, and the worker's clients wait out a
   Redis outage: a worker stopped while Redis was down waited until Redis came back. Once the
   grace of running jobs is over, the writes of the stop (a job put back on its queue, arq's
   health key, the on_shutdown hook's) share one deadline (worker/stopping.py); a job whose
   end could not be written by then is left to its lease, and the process's last step cancels
   whatever still waits.
"""

import asyncio
import inspect
import logging
import signal
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from arq import Retry
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.jobs import deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms
from arq.worker import Worker

from shared.connections import REDIS_FAILURES
from shared.outages import ride_out_outages
from shared.queue.base import PAUSED_MESSAGE, RESUMED_MESSAGE
from shared.subscriptions import Subscription
from worker.claims import Claimed, JobClaims
from worker.job_ends import JobEnds
from worker.leases import Leases
from worker.stopping import CANCEL_WAIT, StopDeadline, cancel_leftovers

__all__ = ["ClaimingWorker", "Leases", "QueueWaitingRedis", "check_arq_internals"]

logger = logging.getLogger(__name__)

BUSY_RECHECK = 1.0
"""Longest wait of a worker with no free slot before its loop turns (arq's heart beat)."""

WORKER_ATTRIBUTES = (
    "job_counter",
    "max_jobs",
    "tasks",
    "allow_pick_jobs",
    "loop",
    "pool",
    "ctx",
    "functions",
    "job_timeout_s",
    "max_tries",
    "on_job_start",
    "on_job_end",
    "after_job_end",
    "jobs_complete",
    "jobs_failed",
    "jobs_retried",
    "heart_beat",
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
    arq lacks: better a worker that refuses to start than one that takes no job, or takes one
    twice."""
    missing = [name for name in WORKER_ATTRIBUTES if not hasattr(worker, name)]
    for method, calls in (
        ("main", ("self._poll_iteration()",)),
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


class ClaimingWorker(Worker):
    """arq's Worker, claiming with JobClaims from every queue its pool (QueueWaitingRedis)
    serves, and running and ending the jobs itself; `check_arq_internals` runs as it is
    built."""

    def __init__(self, *, worker_id: str, lease_seconds: float, **options: Any) -> None:
        super().__init__(**options)
        check_arq_internals(self)
        self.worker_id = worker_id
        # For the startup hook (worker/main.py), which sees only the context.
        self.ctx["worker_id"] = worker_id
        self._claims = JobClaims(self.pool, worker_id, lease_seconds)
        self._ends = JobEnds(self.pool)
        self.leases = Leases(self.pool, lease_seconds, worker_id)
        self._lease_seconds = lease_seconds
        self._slot_freed = asyncio.Event()
        self._drained = False
        self.stop = StopDeadline()
        # For the runner, which puts back the jobs it was running by the same deadline.
        self.ctx["stop"] = self.stop
        self.on_stop = self._grace_over

    def _grace_over(self, signum: signal.Signals) -> None:
        """arq's on_stop: the running jobs' grace is over (or there was none), and arq has just
        cancelled the jobs still running; their writes begin."""
        self.stop.begin()

    def _queues(self) -> "QueueReads":
        pool = self.pool
        if isinstance(pool, QueueWaitingRedis):
            return pool.reads
        return QueueReads([self.queue_name], fallback_poll=0.0)

    async def _poll_iteration(self) -> None:
        """One turn of arq's loop: claim jobs for the free slots and start them, or wait for a
        slot to free; then arq's heart beat. A worker whose last claim took every due job
        waits for a wake-up first, and claims as soon as one comes (not after arq's pause
        between turns)."""
        self.leases.start()
        if self.allow_pick_jobs:
            free = self.max_jobs - self.job_counter
            if free <= 0:
                await self._wait_for_a_slot()
            else:
                reads = self._queues()
                if self._drained and not await reads.wait() and not await self._any_due(reads):
                    # The fallback read found nothing: a look costs a read of each queue
                    # only, where a claim costs its script too.
                    pass
                elif self.allow_pick_jobs:
                    await self._claim(reads, free)
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
        await self.heart_beat()

    async def _any_due(self, reads: "QueueReads") -> bool:
        """Whether any queue to read has a due job; those with none become quiet."""
        queues = reads.to_read()
        reads.reading()
        now = timestamp_ms()
        async with self.pool.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zrangebyscore(queue, "-inf", now, start=0, num=1)
            found = await pipe.execute()
        reads.found(queues, [len(due) for due in found])
        return any(found)

    async def _claim(self, reads: "QueueReads", free: int) -> None:
        queues = reads.to_read()
        reads.reading()
        claim = await self._claims.claim(queues, free)
        reads.found(queues, claim.found)
        # Every due job is taken: nothing to start until a wake-up (or a job falls due).
        self._drained = len(claim.jobs) < free and not claim.left
        if not self.allow_pick_jobs:
            # The worker began to stop while the claim was on its way: the jobs go back.
            for claimed in claim.jobs:
                await self._end(claimed, due_in_ms=0)
            return
        for claimed in claim.jobs:
            self._start(claimed)

    async def _wait_for_a_slot(self) -> None:
        self._slot_freed.clear()
        if self.job_counter < self.max_jobs:
            return
        try:
            async with asyncio.timeout(BUSY_RECHECK):
                await self._slot_freed.wait()
        except TimeoutError:
            pass

    def _start(self, claimed: Claimed) -> None:
        if self._running_here(claimed.job_id):
            # Its lease ran out while it ran here (an event loop blocked for that long): the
            # claim took it again for this worker, which already runs it.
            return
        self.job_counter += 1
        task = self.loop.create_task(self._run(claimed))
        task.add_done_callback(self._slot_done)
        self.tasks[claimed.job_id] = task

    def _slot_done(self, task: "asyncio.Task[None]") -> None:
        self.job_counter -= 1
        self._slot_freed.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("a job's run failed: %r", error, exc_info=error)

    async def _run(self, claimed: Claimed) -> None:
        """Run the claimed job's function as arq's `run_job` would, then end it."""
        job_id = claimed.job_id
        if claimed.envelope is None:
            logger.warning("job %s expired, or was cancelled, before it started", job_id)
            return await self._end(claimed)
        try:
            name, args, kwargs, enqueued_try, enqueue_time_ms = deserialize_job_raw(
                claimed.envelope, deserializer=self.job_deserializer
            )
        except Exception:
            logger.exception("job %s: its envelope could not be read", job_id)
            self.jobs_failed += 1
            return await self._end(claimed)
        function = self.functions.get(name)
        if function is None:
            logger.warning("job %s: function %r not found", job_id, name)
            self.jobs_failed += 1
            return await self._end(claimed)
        job_try = max(claimed.job_try, enqueued_try or 0)
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job_try > max_tries:
            logger.warning("job %s (%s): max retries %d exceeded", job_id, name, max_tries)
            self.jobs_failed += 1
            return await self._end(claimed)
        ctx = {
            **self.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_time_ms),
            "score": claimed.score,
        }
        if self.on_job_start:
            await self.on_job_start(ctx)
        timeout = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        again_in_ms: int | None = None
        async with self.leases.hold(job_id, claimed.queue):
            try:
                async with asyncio.timeout(timeout):
                    await function.coroutine(ctx, *args, **kwargs)
            except Retry as retry:
                logger.info(
                    "job %s (%s) retrying in %gs", job_id, name, (retry.defer_score or 0) / 1000
                )
                self.jobs_retried += 1
                again_in_ms = retry.defer_score or 0
            except asyncio.CancelledError:
                # arq cancelled it: the worker stops, and the job runs again elsewhere.
                logger.info("job %s (%s) cancelled, will be run again", job_id, name)
                self.jobs_retried += 1
                again_in_ms = 0
            except Exception as error:
                logger.exception("job %s (%s) failed: %r", job_id, name, error)
                self.jobs_failed += 1
            else:
                self.jobs_complete += 1
        if self.on_job_end:
            await self.on_job_end(ctx)
        await self._end(claimed, due_in_ms=again_in_ms)
        if self.after_job_end:
            await self.after_job_end(ctx)

    async def _end(self, claimed: Claimed, due_in_ms: int | None = None) -> None:
        """Take the job off its queue (or put it back, due in `due_in_ms`) and let go of its
        lease; once the worker stops, by the stop's deadline."""
        job_id, queue = claimed.job_id, claimed.queue
        if due_in_ms is None:
            write = self._ends.done(job_id, queue)
        else:
            write = self._ends.again(job_id, queue, due_in_ms)
        try:
            if not self.stop.begun:
                await write
            elif not await self.stop.within(write):
                logger.warning(
                    "job %s: Redis did not answer within %gs as the worker stopped; the job is "
                    "left to its lease: another worker runs it once the lease runs out "
                    "(WORKER_LEASE, %gs)",
                    job_id, self.stop.seconds, self._lease_seconds,
                )  # fmt: skip
        except REDIS_FAILURES as error:
            logger.error(
                "job %s: its end could not be written (%r); it is left to its lease, and its "
                "next attempt finds its record", job_id, error,
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
        await self.leases.close()
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

    def _running_here(self, job_id: str) -> bool:
        task = self.tasks.get(job_id)
        return task is not None and not task.done()


class QueueReads:
    """Which queues a worker's next claim reads, and its wait for a wake-up in between.

    Each claim starts with the next queue, so that the first free slot goes to each in turn. A
    queue whose last claim found nothing due is read again once a wake-up names it, or at the
    next read of every queue (WORKER_FALLBACK_POLL after the last): a worker serving a busy
    queue and a quiet one does not read the quiet one each time."""

    def __init__(self, queues: Sequence[str], fallback_poll: float) -> None:
        if not queues:
            raise ValueError("a worker must serve at least one queue")
        self.queues = list(queues)
        self._fallback_poll = fallback_poll
        self._wakeup = asyncio.Event()
        self._turn = 0
        self._quiet: set[str] = set()
        self._full_read_at = 0.0
        self.paused: set[str] = set()
        """The keys of the queues served that are paused: no claim reads them."""
        self.listening: Callable[[], bool] = lambda: False
        """Whether wake-ups come: without them, every turn of the loop reads every queue."""

    def woken(self, queue: str) -> None:
        self._quiet.discard(queue)
        self._wakeup.set()

    def pause(self, queue: str, paused: bool) -> None:
        if paused:
            self.paused.add(queue)
        elif queue in self.paused:
            self.paused.discard(queue)
            self.woken(queue)

    def to_read(self) -> list[str]:
        now = time.monotonic()
        if not self.listening() or now - self._full_read_at >= self._fallback_poll:
            self._full_read_at = now
            self._quiet.clear()
        first = self._turn % len(self.queues)
        self._turn += 1
        turned = self.queues[first:] + self.queues[:first]
        return [queue for queue in turned if queue not in self._quiet and queue not in self.paused]

    def reading(self) -> None:
        """A claim reads now: a wake-up that comes after this is not lost, and one that came
        before is for a job this read finds (the api queues, then announces)."""
        self._wakeup.clear()

    def found(self, queues: Sequence[str], counts: Sequence[int]) -> None:
        """How many due jobs a read found on each of `queues`."""
        for queue, count in zip(queues, counts, strict=True):
            if not count:
                self._quiet.add(queue)

    async def wait(self) -> bool:
        """Until a wake-up (True), or WORKER_FALLBACK_POLL (False; at once without wake-ups:
        the loop's own pause, arq's poll_delay, is then the wait)."""
        if not self.listening():
            return False
        try:
            async with asyncio.timeout(self._fallback_poll):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True


class QueueWaitingRedis(ArqRedis):
    """A worker's arq pool: it knows the queues the worker serves and hears their wake-ups
    (`reads`), and its connections wait out a Redis restart (shared/outages.py) where arq
    would exit.

    `queues` are the keys of the queues served, the first being the one arq's Worker is
    given."""

    def __init__(self, *, queues: Sequence[str], fallback_poll: float, **options: Any) -> None:
        super().__init__(**options)
        ride_out_outages(self.connection_pool)
        self.reads = QueueReads(queues, fallback_poll)
        self._subscriptions: list[Subscription] = []
        self._paused_key: str | None = None
        self._names: dict[str, str] = {}
        self._reading_paused: set[asyncio.Future[None]] = set()
        self.reads.listening = self._listening

    async def listen_for_wakeups(
        self,
        channels: dict[str, str],
        paused_key: str | None = None,
        names: dict[str, str] | None = None,
    ) -> None:
        """Subscribe to the wake-up channel of each queue served (`channels`: queue key to its
        channel), which also says when a queue is paused or resumed; then read which are
        paused (`paused_key`: the set of paused queue names; `names`: each queue key's name),
        and again whenever a subscription comes back after it was lost."""
        self._paused_key, self._names = paused_key, names or {}
        for queue in self.reads.queues:
            subscription = Subscription(
                self, channels[queue], partial(self._woken, queue), self._read_paused_soon
            )
            await subscription.start()
            self._subscriptions.append(subscription)
        await self._read_paused()

    async def _read_paused(self) -> None:
        if self._paused_key is None:
            return
        paused = {name.decode() for name in await self.smembers(self._paused_key)}  # type: ignore[misc]
        for queue in self.reads.queues:
            self.reads.pause(queue, self._names.get(queue, queue) in paused)

    def _read_paused_soon(self) -> None:
        task = asyncio.ensure_future(self._read_paused())
        self._reading_paused.add(task)
        task.add_done_callback(self._read_paused_done)

    def _read_paused_done(self, task: "asyncio.Future[None]") -> None:
        self._reading_paused.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The next lost-and-found subscription reads again.
            logger.warning("could not read the paused queues: %r", error)

    def _woken(self, queue: str, message: bytes) -> None:
        if message == PAUSED_MESSAGE:
            self.reads.pause(queue, True)
        elif message == RESUMED_MESSAGE:
            self.reads.pause(queue, False)
        else:
            self.reads.woken(queue)

    def _listening(self) -> bool:
        return bool(self._subscriptions) and all(s.active for s in self._subscriptions)

    async def stop_listening(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
