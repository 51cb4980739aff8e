"""The port of the kept failures. A job that ends failed, cancelled or expired is kept here as
it was queued (its QueuedJob: parameters, owner, callback) for FAILED_JOB_TTL, indexed by its
queue and its job type and ordered by when it ended, while its record is kept as long in the
record store (the runner writes both, this first). Running it again takes it out (`take`): one
caller wins, so that a job is never queued twice by two retries at once.

Kept apart from the record, not inside it: the record is written on every change of a job and
announced to every api process, and a job's parameters would ride along each time; here they
are written once, only for the jobs that fail. Backends: shared/failures/memory.py (the local
mode) and shared/failures/redis.py (on the queue's Redis, which never evicts, so that what an
operator means to run again is not dropped under memory pressure).
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from shared.queue.base import QueuedJob

TAKE_PAGE = 500
"""Kept failures one read of an index returns at most (a bulk retry reads on until done)."""


class KeptFailures(Protocol):
    @property
    def ttl(self) -> int:
        """Seconds a failure is kept (FAILED_JOB_TTL): its record is kept as long."""
        ...

    async def keep(self, job: QueuedJob, ended_at: datetime) -> None:
        """Keep the job that ended at `ended_at`, replacing what was kept of it before, and trim
        its queue's and its type's indexes of the failures older than the TTL."""
        ...

    async def take(self, job_id: str, queue: str, name: str) -> QueuedJob | None:
        """Take the job out to run it again: None when it is not kept (never was, expired, or
        another caller took it first). `name` is its job type, `queue` that type's queue."""
        ...

    async def newest(
        self,
        queue: str,
        *,
        name: str | None = None,
        since: datetime | None = None,
        count: int = TAKE_PAGE,
    ) -> list[str]:
        """Ids of up to `count` kept failures of the queue (of one job type of it, when `name`),
        newest first, that ended at or after `since` (any time when None)."""
        ...

    async def get_many(self, queue: str, job_ids: Sequence[str]) -> list[QueuedJob]:
        """What is kept of these jobs of the queue, in their order; gone ones left out."""
        ...

    async def count(self, queue: str) -> int:
        """How many failures of the queue are kept (GET /queues shows it)."""
        ...

    async def close(self) -> None: ...
