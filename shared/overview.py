"""The operator's view of the whole system: queue depth, live workers and recent jobs.

The api reads it for the dashboard and its metrics. Redis (shared/redis_overview.py) and the
local mode's memory (below) are its two backends; neither ever lists keys: workers and recent
jobs are kept in small bounded sets written as things happen.
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shared.records import JobRecord
from shared.workers import WorkerStatus

RECENT_JOBS = 100
"""How many of the last submitted jobs are remembered for the dashboard."""


@dataclass(frozen=True)
class QueueDepth:
    due: int
    """Jobs on the queue whose time has come: waiting to start, or running."""
    deferred: int
    """Jobs waiting for a retry's delay to pass."""


class Overview(Protocol):
    async def queue_depth(self) -> QueueDepth: ...

    async def workers(self) -> list[WorkerStatus]:
        """The workers whose heartbeat is fresh, oldest first."""
        ...

    async def recent_job_ids(self, limit: int) -> list[str]:
        """The ids of the last submitted jobs, newest first."""
        ...

    async def note_submitted(self, record: JobRecord) -> None:
        """Remember a job that was just submitted, dropping the oldest beyond RECENT_JOBS."""
        ...


def waiting_jobs(depth: QueueDepth, workers: list[WorkerStatus]) -> int:
    """Jobs due but not started: the queue holds running jobs too until they end."""
    running = sum(len(worker.running) for worker in workers)
    return max(0, depth.due - running)


class LocalOverview:
    """The local mode's view: the embedded worker is the only worker."""

    def __init__(
        self, backlog: Callable[[], tuple[int, int]], worker: Callable[[], WorkerStatus]
    ) -> None:
        """`backlog` gives the jobs waiting to start and those waiting for a retry's delay."""
        self._backlog = backlog
        self._worker = worker
        self._recent: deque[str] = deque(maxlen=RECENT_JOBS)

    async def queue_depth(self) -> QueueDepth:
        waiting, deferred = self._backlog()
        return QueueDepth(due=waiting + len(self._worker().running), deferred=deferred)

    async def workers(self) -> list[WorkerStatus]:
        return [self._worker()]

    async def recent_job_ids(self, limit: int) -> list[str]:
        return list(self._recent)[-limit:][::-1] if limit > 0 else []

    async def note_submitted(self, record: JobRecord) -> None:
        self._recent.append(record.id)
