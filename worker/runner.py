"""Runs one attempt of a job and writes what happened into its record.

This is the boundary between job code and the service: whatever the job raises becomes a
failed record with a readable error (or a retry, when the job type allows one). Both the arq
worker and the embedded worker of the local mode run jobs through it. A job past its deadline
(`?expires_in=`) ends `expired` here instead of starting; one that ends failed, cancelled or
expired is kept with its parameters for FAILED_JOB_TTL (shared/failures/), to be run again.
"""

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.activity import WorkerActivity
from shared.backend import Backend
from shared.callbacks import CallbackOutbox
from shared.catalog import JobType
from shared.errors import JobFailedError, RetryableJobError
from shared.failures import KeptFailures
from shared.logs import job_event
from shared.queue import QueuedJob
from shared.quotas import QuotaLedger
from shared.records import (
    CANCELLED_MESSAGE,
    EXPIRED_MESSAGE,
    Callback,
    JobRecord,
    JobStatus,
    RecordStore,
    utcnow,
)
from shared.settings import Settings
from shared.tracing import current_trace_context
from worker.attempt_records import AttemptRecords
from worker.attempt_spans import AttemptSpans, note_end, note_failure, note_skipped
from worker.context import AttemptContext
from worker.cpu_pool import close_cpu_pool, create_cpu_pool
from worker.stopping import StopDeadline

logger = logging.getLogger(__name__)

# Deliveries allowed beyond a job type's attempts, for attempts cut short because their worker
# died or stopped: enough to ride out a restart or two, few enough to stop a job that kills
# every worker it lands on.
REDELIVERIES = 3


@dataclass(frozen=True)
class Finished:
    """The job ended (succeeded or failed); its record says which."""


@dataclass(frozen=True)
class RetryLater:
    """The attempt failed and another is allowed after `delay` seconds."""

    delay: float


Outcome = Finished | RetryLater


def retry_delay(job_type: JobType, attempt: int) -> float:
    """Exponential backoff with jitter, so that retries of many jobs do not arrive together."""
    return float(job_type.retry_delay * 2.0 ** (attempt - 1) * random.uniform(0.5, 1.5))


def describe(error: BaseException, job_type: JobType) -> str:
    """The error as a client reads it in the job record."""
    if isinstance(error, TimeoutError):
        return f"timed out after {job_type.timeout:g}s"
    if isinstance(error, JobFailedError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def ended_without_outcome(earlier: JobRecord | None, attempt: int) -> bool:
    """Whether the delivery before `attempt` ended without recording how: its record still says
    running, or it is older still (the attempt died before announcing itself). A retry, or a
    worker that stopped in its grace period, wrote the job back to queued with that attempt."""
    if earlier is None:
        return False
    return earlier.status is JobStatus.RUNNING or earlier.attempts < attempt - 1


def encode_result(job_type: JobType, result: object) -> Any:
    """The result as plain JSON data, checked against the declared result model. What JSON
    cannot hold raises here; a float that is not finite becomes null, as pydantic writes it."""
    validated = job_type.result.model_validate(result, from_attributes=True)
    return validated.model_dump(mode="json")


class JobRunner:
    """Runs attempts of declared jobs with their code, timeouts and retries."""

    def __init__(
        self,
        records: RecordStore,
        cpu_pool: Executor,
        activity: WorkerActivity | None = None,
        quotas: QuotaLedger | None = None,
        callbacks: CallbackOutbox | None = None,
        stop: StopDeadline | None = None,
        failures: KeptFailures | None = None,
    ) -> None:
        self._records = records
        # Where a job that ends failed, cancelled or expired is kept, to be run again.
        self._failures = failures
        # When a stopping worker gives up putting a job back (its lease then frees the job).
        self._stop = stop if stop is not None else StopDeadline()
        # A job with a callback_url has it put in the outbox before its end is recorded.
        self._callbacks = callbacks
        self._cpu_pool = cpu_pool
        # Whoever ends a job releases its quota (the api, for a job it cancels while queued).
        self._quotas = quotas
        # Counts each attempt's start and end in the metrics and the worker's heartbeat.
        self._activity = activity if activity is not None else WorkerActivity()
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._cancel_requested: set[str] = set()
        self._writers: dict[str, AttemptRecords] = {}
        self._spans = AttemptSpans()

    def cancel(self, job_id: str) -> bool:
        """Stop the job if it runs here; its record then says cancelled."""
        task = self._running.get(job_id)
        if task is None:
            return False
        self._cancel_requested.add(job_id)
        task.cancel()
        return True

    async def run(self, job_type: JobType, job: QueuedJob, *, attempt: int) -> Outcome:
        """Run one attempt of `job` in the current task, which `cancel` may cancel; in a span
        of its own when this process exports traces."""
        if not self._spans.enabled:
            return await self._run(job_type, job, attempt)
        with self._spans.attempt(job_type, job, attempt):
            return await self._run(job_type, job, attempt)

    async def _run(self, job_type: JobType, job: QueuedJob, attempt: int) -> Outcome:
        ttl = self._records.ttl_for(job_type.result_ttl)
        job_id = job.id
        # Built from what the queue carries rather than read back: one Redis round trip less.
        record = JobRecord(
            id=job_id,
            name=job_type.name,
            max_attempts=job_type.max_attempts,
            attempts=attempt,
            created_at=job.created_at,
            owner=job.owner,
            scheduled_for=job.scheduled_for,
            callback=Callback(url=job.callback_url) if job.callback_url is not None else None,
            trace_context=job.trace_context,
            expires_at=job.expires_at,
            previous_errors=list(job.previous_errors),
        )
        cut_short = False
        if attempt > 1:
            earlier = await self._records.get(job_id)
            if earlier is not None and earlier.status.finished:
                await self._ended_before(record, earlier)
                if self._spans.enabled:
                    note_skipped()
                return Finished()
            cut_short = ended_without_outcome(earlier, attempt)
        if attempt > job_type.max_attempts + REDELIVERIES:
            # Every earlier delivery ended without an outcome: its worker died or stopped
            # mid-attempt, or could not write the record (worker/main.py).
            return await self._finish(
                record,
                ttl,
                job,
                error=f"gave up after {attempt - 1} attempts: each ended without an outcome "
                "(its worker stopped, or could not record it)",
            )
        if cut_short:
            logger.warning(
                "job %s (%s): attempt %d starts again; attempt %d ended without an outcome "
                "(its worker died or was cut off from Redis, and its lease ran out)",
                job_id, job_type.name, attempt, attempt - 1,
                extra=job_event("job.redelivered", job_id, job_type.name, attempt=attempt),
            )  # fmt: skip
            self._activity.redelivered(record)
        if attempt == 1 and job.expires_at is not None and utcnow() >= job.expires_at:
            # Never started, and too late to: it ends instead of running late.
            logger.info(
                "job %s (%s) expired before it started", job_id, job_type.name,
                extra=job_event("job.expired", job_id, job_type.name, attempt=attempt),
            )  # fmt: skip
            record.attempts = 0
            return await self._finish(
                record, ttl, job, error=EXPIRED_MESSAGE, status=JobStatus.EXPIRED
            )
        task = asyncio.current_task()
        assert task is not None
        self._running[job_id] = task
        try:
            return await self._attempt(job_type, record, ttl, job)
        except asyncio.CancelledError:
            if job_id not in self._cancel_requested:
                # The worker is stopping: the job goes back to the queue and runs again.
                record.status = JobStatus.QUEUED
                record.error = "the worker stopped during this attempt; the job will run again"
                # Not cut short by another cancel; given up at the stop's deadline, leaving
                # the record `running` (the next attempt counts this one as cut short).
                await self._stop.within(self._writer(job_id).put(record, ttl))
                raise
            task.uncancel()
            logger.info(
                "job %s (%s) cancelled while running", job_id, job_type.name,
                extra=job_event("job.cancelled", job_id, job_type.name, attempt=attempt),
            )  # fmt: skip
            return await self._finish(
                record, ttl, job, error=CANCELLED_MESSAGE, status=JobStatus.CANCELLED
            )
        finally:
            self._activity.ended(job_id)
            self._running.pop(job_id, None)
            self._writers.pop(job_id, None)
            self._cancel_requested.discard(job_id)

    async def _ended_before(self, record: JobRecord, stored: JobRecord) -> None:
        """An earlier delivery of the job recorded its end (its worker died before telling the
        queue): it is not run again, which would take a finished record back to running and
        make a second end (and a second callback)."""
        logger.info(
            "job %s (%s): attempt %d finds the job %s already; not run again",
            record.id, record.name, record.attempts, stored.status.value,
        )  # fmt: skip
        if record.owner is not None and self._quotas is not None:
            await self._quotas.release(record.owner, record.id)

    async def _attempt(
        self, job_type: JobType, record: JobRecord, ttl: int, job: QueuedJob
    ) -> Outcome:
        record.status = JobStatus.RUNNING
        record.started_at = utcnow()
        writer = AttemptRecords(self._records)
        self._writers[record.id] = writer
        writer.announce_running(record, ttl)
        self._activity.started(record, job_type.queue)
        if logger.isEnabledFor(logging.INFO):  # the fields cost time on every job otherwise
            logger.info(
                "job %s (%s) started, attempt %d", record.id, job_type.name, record.attempts,
                extra=job_event("job.started", record.id, job_type.name, attempt=record.attempts),
            )  # fmt: skip
        started = time.monotonic()
        context = AttemptContext(record, writer, ttl, self._cpu_pool)
        try:
            typed_parameters = job_type.parameters.model_validate(job.parameters)
            async with asyncio.timeout(job_type.timeout):
                result = await job_type(typed_parameters, context)
        except Exception as error:  # the job boundary: any failure becomes a readable record
            return await self._failed(job_type, record, ttl, job, error, started)
        try:
            data = encode_result(job_type, result)
        except ValidationError as error:
            return await self._finish(
                record, ttl, job, error=f"result does not match {job_type.result.__name__}: {error}"
            )
        except (ValueError, TypeError) as error:
            return await self._finish(
                record, ttl, job, error=f"result could not be encoded as JSON: {error}"
            )
        duration = time.monotonic() - started
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "job %s (%s) succeeded in %.3fs", record.id, job_type.name, duration,
                extra=job_event(
                    "job.succeeded", record.id, job_type.name,
                    attempt=record.attempts, duration=duration,
                ),
            )  # fmt: skip
        return await self._finish(record, ttl, job, result=data)

    async def _failed(
        self,
        job_type: JobType,
        record: JobRecord,
        ttl: int,
        job: QueuedJob,
        error: BaseException,
        started: float,
    ) -> Outcome:
        message = describe(error, job_type)
        retryable = isinstance(error, RetryableJobError | TimeoutError)
        retried = retryable and record.attempts < job_type.max_attempts
        if self._spans.enabled:
            note_failure(error, retried=retried)
        if retried:
            delay = retry_delay(job_type, record.attempts)
            logger.warning(
                "job %s (%s) attempt %d failed, retrying in %.2fs: %s",
                record.id, job_type.name, record.attempts, delay, message,
                extra=job_event(
                    "job.retried", record.id, job_type.name, attempt=record.attempts,
                    duration=time.monotonic() - started, delay=round(delay, 3),
                ),
            )  # fmt: skip
            record.status = JobStatus.QUEUED
            record.error = message
            self._activity.retried(record)
            await self._writer(record.id).put(record, ttl)
            return RetryLater(delay)
        duration = time.monotonic() - started
        logger.warning(
            "job %s (%s) failed after %.3fs: %s", record.id, job_type.name, duration, message,
            extra=job_event(
                "job.failed", record.id, job_type.name,
                attempt=record.attempts, duration=duration,
            ),
        )  # fmt: skip
        return await self._finish(record, ttl, job, error=message)

    async def _finish(
        self,
        record: JobRecord,
        ttl: int,
        job: QueuedJob,
        *,
        result: Any = None,
        error: str | None = None,
        status: JobStatus | None = None,
    ) -> Finished:
        # The held-back `running` write writes this same record when its moment comes: it
        # must not land with this end's fields before the callback is in the outbox and the
        # quota given back (seen: a client saw its job finished, and was refused a 429).
        await self._writer(record.id).settle()
        if status is None:
            status = JobStatus.FAILED if error is not None else JobStatus.SUCCEEDED
        record.status = status
        record.result = result
        record.error = error
        record.finished_at = utcnow()
        if self._spans.enabled:
            note_end(record)
            # The callback's span is a child of this attempt's.
            record.trace_context = current_trace_context() or record.trace_context
        self._activity.finished(record, job.queue)
        if record.callback is not None and self._callbacks is not None:
            # Before the end is recorded: a worker that dies in between leaves the callback
            # to another, which sends it once an attempt has recorded the end.
            await self._callbacks.schedule(record.id, record.callback.url)
        if record.owner is not None and self._quotas is not None:
            # Before the end is recorded: a client that sees the job finished may submit
            # again at once, and must find its slot free (seen: a 429 right after a ?wait).
            await self._quotas.release(record.owner, record.id)
        if status.kept_failure and self._failures is not None:
            # Before the end is recorded, as the callback and the quota are: whoever sees the
            # job failed may run it again at once. Its record is kept as long.
            ttl = max(ttl, self._failures.ttl)
            await self._failures.keep(job, record.finished_at)
        await self._writer(record.id).put(record, ttl)
        return Finished()

    def _writer(self, job_id: str) -> AttemptRecords:
        """Where this attempt's records go: through its writer once it has started. Either way
        they only replace the job's record, never create it (worker/attempt_records.py)."""
        return self._writers.get(job_id) or AttemptRecords(self._records)


@asynccontextmanager
async def running_jobs(
    settings: Settings,
    backend: Backend,
    activity: WorkerActivity,
    stop: StopDeadline | None = None,
) -> AsyncIterator[JobRunner]:
    """The runner of a worker process or of the local mode's embedded worker, over the
    backend's records and quotas, with a process pool for CPU-bound job code; it stops jobs
    that a client cancels while they run. `stop`: the worker process's stop deadline."""
    cpu_pool = create_cpu_pool(settings.cpu_workers)
    try:
        runner = JobRunner(
            backend.records,
            cpu_pool,
            activity,
            backend.quotas,
            backend.callbacks,
            stop,
            backend.failures,
        )
        await backend.queue.listen_for_cancels(runner.cancel)
        yield runner
    finally:
        await close_cpu_pool(cpu_pool)
