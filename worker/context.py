"""The worker's side of shared.jobs.JobContext: progress reports of one attempt, and its way
into the process pool that runs CPU-bound job code (worker/cpu_pool.py)."""

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from shared.records import JobRecord, Progress
from worker.attempt_records import AttemptRecords

T = TypeVar("T")


class AttemptContext:
    """The JobContext handed to a job's code for one attempt."""

    def __init__(
        self, record: JobRecord, records: AttemptRecords, ttl: int, cpu_pool: Executor
    ) -> None:
        self._record = record
        self._records = records
        self._ttl = ttl
        self._cpu_pool = cpu_pool

    @property
    def job_id(self) -> str:
        return self._record.id

    @property
    def attempt(self) -> int:
        return self._record.attempts

    async def report_progress(
        self, current: float, total: float, message: str | None = None
    ) -> None:
        """Make progress visible to clients polling the job's record."""
        self._record.progress = Progress(current=current, total=total, message=message)
        await self._records.put(self._record, self._ttl)

    async def run_in_process(self, function: Callable[..., T], *args: object) -> T:
        """Run CPU-bound code in the process pool so the event loop keeps serving other jobs."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._cpu_pool, function, *args)
