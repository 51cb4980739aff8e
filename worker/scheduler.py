"""Submits the runs of the scheduled job types (`@job(schedule=...)`) at their due times.

Every worker runs a scheduler (the local mode's embedded worker too), and each due time runs
once however many do: at a due time each scheduler claims it in the schedule book
(shared/schedules/), and only the one whose claim wins submits the run, through the same path
as a client's POST. A due time a scheduler reaches more than LATE_LIMIT late (its worker was
stalled, or cut off from Redis) is skipped, never run late; due times that pass while no
worker runs are not run later either.
"""

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from shared.backend import Backend
from shared.catalog import Catalog, JobType
from shared.errors import BackendUnavailableError
from shared.metrics import Metrics
from shared.records import utcnow
from shared.schedules import LATE_LIMIT
from shared.submission import submit_job

logger = logging.getLogger(__name__)

CLOSE_GRACE = 5.0
"""Seconds a closing scheduler waits for a due time it is submitting, before it cancels it."""


class Scheduler:
    """One task per scheduled job type of the catalog, each submitting its due times."""

    def __init__(self, catalog: Catalog, backend: Backend, holder: str, metrics: Metrics) -> None:
        self._job_types = catalog.scheduled
        self._backend = backend
        self._holder = holder
        self._metrics = metrics
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow(job_type), name=f"schedule {job_type.name}")
            for job_type in self._job_types
        ]
        if self._tasks:
            logger.info(
                "scheduler started: %s",
                ", ".join(f"{job.name} ({job.schedule})" for job in self._job_types),
            )

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop at the next due time; a run being submitted is given `grace` to finish."""
        self._stopping.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _follow(self, job_type: JobType) -> None:
        schedule = job_type.schedule
        assert schedule is not None
        due = schedule.next_after(utcnow())
        while await self._sleep_until(due):
            late = utcnow() - due
            if late > timedelta(seconds=LATE_LIMIT):
                logger.warning(
                    "scheduled job %s: due time %s reached %.1fs late, more than %gs; it and "
                    "any due time until now are skipped",
                    job_type.name, due.isoformat(), late.total_seconds(), LATE_LIMIT,
                )  # fmt: skip
                due = schedule.next_after(utcnow())
                continue
            try:
                await self._run_due(job_type, due)
            except Exception:  # a background loop: one due time's failure must not end it
                logger.exception(
                    "scheduled job %s: due time %s failed", job_type.name, due.isoformat()
                )
            due = schedule.next_after(due)

    async def _sleep_until(self, due: datetime) -> bool:
        """Wait for the wall clock to reach `due`; False if the scheduler is closing."""
        while not self._stopping.is_set():
            remaining = (due - utcnow()).total_seconds()
            if remaining <= 0:
                return True
            # Woken at the time due, unless the wall clock moved meanwhile: the loop looks again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), remaining)
        return False

    async def _run_due(self, job_type: JobType, due: datetime) -> None:
        """Claim the due time and, if this scheduler won it, submit its run."""
        name = job_type.name
        try:
            if not await self._backend.schedules.claim(name, due, self._holder):
                return  # another worker runs it
            late = utcnow() - due
            if late > timedelta(seconds=LATE_LIMIT):
                # The claim waited out a Redis outage: too late to run, and perhaps run already
                # by a worker whose claim has expired since.
                logger.warning(
                    "scheduled job %s: due time %s claimed %.1fs late; skipped",
                    name, due.isoformat(), late.total_seconds(),
                )  # fmt: skip
                return
            record = await submit_job(
                self._backend,
                job_type,
                dict(job_type.schedule_parameters),
                scheduled_for=due,
            )
        except BackendUnavailableError as error:
            logger.warning(
                "scheduled job %s: due time %s skipped: %s", name, due.isoformat(), error
            )
            return
        self._metrics.jobs_submitted.labels(name).inc()
        try:
            await self._backend.schedules.note_run(name, due, record.id)
        except BackendUnavailableError as error:
            logger.warning(
                "scheduled job %s: run %s is queued, but its last run was not noted: %s",
                name, record.id, error,
            )  # fmt: skip
