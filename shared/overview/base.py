"""The operator's view of the whole system: queue depth and live workers.

The api reads it for the dashboard and its metrics; workers announce themselves in it. Memory
(shared/overview/memory.py) and Redis (shared/overview/redis.py) are its two backends; neither
ever lists keys: workers are kept in a small bounded set written as they beat. (The dashboard's
recent jobs are each caller's own job list, shared/listing/.)
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.activity import WorkerStatus

HEARTBEAT_SECONDS = 2.0
"""How often a worker announces itself."""
WORKER_STALE_SECONDS = 3 * HEARTBEAT_SECONDS
"""A worker not heard from for this long is gone (stopped, crashed or cut off from Redis)."""


@dataclass(frozen=True)
class QueueDepth:
    due: int
    """Jobs on the queue whose time has come: waiting to start, or running."""
    deferred: int
    """Jobs waiting for a retry's delay to pass."""
    oldest_due_at: float | None = None
    """When (seconds since the epoch) the job that has been due longest without starting
    became due; None when none waits. Only jobs named in `running` are known to have started."""


class Overview(Protocol):
    async def queue_depths(
        self, queues: Sequence[str], running: Collection[str] = ()
    ) -> dict[str, QueueDepth]:
        """The depth of each of these queues; `running`: the ids of the jobs the workers say
        they run, which a queue on Redis holds until they end (for `oldest_due_at`)."""
        ...

    async def workers(self) -> list[WorkerStatus]:
        """The workers whose heartbeat is fresh, oldest first."""
        ...

    async def announce(self, status: WorkerStatus) -> None:
        """A worker's heartbeat: its status, fresh for WORKER_STALE_SECONDS."""
        ...

    async def withdraw(self, worker_id: str) -> None:
        """A worker that stops takes itself off the list at once."""
        ...

    async def close(self) -> None:
        """Write what is pending and stop."""
        ...


def running_job_ids(workers: list[WorkerStatus]) -> set[str]:
    return {job.id for worker in workers for job in worker.running}


def running_jobs(queue: str, workers: list[WorkerStatus]) -> int:
    return sum(job.queue == queue for worker in workers for job in worker.running)


def waiting_jobs(queue: str, depth: QueueDepth, workers: list[WorkerStatus]) -> int:
    """Jobs of the queue due but not started: a queue holds running jobs too until they end."""
    return max(0, depth.due - running_jobs(queue, workers))


def serving(queue: str, workers: list[WorkerStatus]) -> int:
    """How many of the workers serve the queue."""
    return sum(queue in worker.queues for worker in workers)


def busy_elsewhere(queue: str, waiting: int, workers: list[WorkerStatus]) -> bool:
    """Whether the queue's jobs wait because every slot of the workers that serve it is taken,
    some by jobs of other queues: a worker serving several queues shares its slots among them,
    so such a queue looks stuck (waiting, none running) while its workers are alive."""
    serving_workers = [worker for worker in workers if queue in worker.queues]
    return (
        waiting > 0
        and bool(serving_workers)
        and all(len(worker.running) >= worker.concurrency for worker in serving_workers)
        and any(job.queue != queue for worker in serving_workers for job in worker.running)
    )


async def waiting_by_queue(overview: Overview, queues: Sequence[str]) -> dict[str, int]:
    """The jobs due and not started on each queue now (the workers first: a queue on Redis
    holds its running jobs too)."""
    workers = await overview.workers()
    depths = await overview.queue_depths(queues, running_job_ids(workers))
    return {queue: waiting_jobs(queue, depth, workers) for queue, depth in depths.items()}
