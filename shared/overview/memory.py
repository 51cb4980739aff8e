"""The local mode's view: the embedded worker, shown as it is at each read, is the only
worker (it needs no heartbeat), and the memory queue's backlog is the queue."""

from collections.abc import Callable, Collection, Sequence

from shared.activity import WorkerStatus
from shared.overview.base import QueueDepth, running_jobs


class MemoryOverview:
    def __init__(
        self,
        backlog: Callable[[str], tuple[int, int]],
        oldest_due_at: Callable[[str], float | None],
    ) -> None:
        """`backlog` gives a queue's jobs waiting to start and those waiting for a retry's
        delay; `oldest_due_at` when the one that has waited longest became due."""
        self._backlog = backlog
        self._oldest_due_at = oldest_due_at
        self._live: list[Callable[[], WorkerStatus]] = []

    def show_worker(self, status: Callable[[], WorkerStatus]) -> None:
        """A worker of this process, whose status is read afresh each time."""
        self._live.append(status)

    async def queue_depths(
        self, queues: Sequence[str], running: Collection[str] = ()
    ) -> dict[str, QueueDepth]:
        workers = await self.workers()
        depths = {}
        for queue in queues:
            waiting, deferred = self._backlog(queue)
            # As on Redis, where a queue holds its running jobs until they end.
            depths[queue] = QueueDepth(
                waiting + running_jobs(queue, workers), deferred, self._oldest_due_at(queue)
            )
        return depths

    async def workers(self) -> list[WorkerStatus]:
        return sorted((status() for status in self._live), key=lambda status: status.started_at)

    async def announce(self, status: WorkerStatus) -> None:
        """Nothing to do: a worker of this process is read live (`show_worker`)."""

    async def withdraw(self, worker_id: str) -> None:
        """Nothing to do: see `announce`."""

    async def close(self) -> None:
        self._live.clear()
