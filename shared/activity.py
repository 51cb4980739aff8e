"""What a worker process is doing: the jobs it runs now and what became of the ones it ran.

The runner tells a WorkerActivity when an attempt starts and how it ends; the activity counts it
in the process's metrics and in its tally for the dashboard's history (shared/history/), and
keeps the worker's status, which the worker publishes in its heartbeat (shared/overview/) and
the embedded worker of the local mode shows directly.
"""

import os
import secrets
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shared.catalog import DEFAULT_QUEUE
from shared.history.tally import Tally
from shared.metrics import Metrics
from shared.records.model import JobRecord, utcnow


class RunningJob(BaseModel):
    id: str
    name: str
    attempt: int
    started_at: datetime
    queue: str = DEFAULT_QUEUE


class WorkerStatus(BaseModel):
    """One worker process as the dashboard shows it; the counts are since it started."""

    id: str
    host: str
    pid: int
    started_at: datetime
    seen_at: datetime
    concurrency: int
    queues: list[str] = []
    """The queues it serves (WORKER_QUEUES)."""
    running: list[RunningJob]
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    expired: int = 0
    metrics_address: str | None = None
    """host:port of the worker's metrics and health endpoint; None where there is none (the
    embedded worker, whose metrics are the api's)."""


def new_worker_id() -> str:
    """Unique even across containers, where every worker may be pid 1."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class WorkerActivity:
    """The running jobs and outcome counts of one worker process, and its metrics."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics(worker=True)
        self.worker_id = worker_id or new_worker_id()
        self.concurrency = concurrency
        self.metrics.worker.slots.set(concurrency)
        self.queues = list(queues)
        self.metrics_address: str | None = None
        self.tally = Tally()
        """The jobs ended since the last heartbeat, which adds them to the history."""
        self._started_at = utcnow()
        self._running: dict[str, tuple[str, int, datetime, str]] = {}
        """Each running job's name, attempt, start and queue; a RunningJob only in `status`,
        every heartbeat, not for every job."""
        self._counts = dict.fromkeys(("succeeded", "failed", "retried", "cancelled", "expired"), 0)
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        # Read when scraped, not written as each job starts and ends.
        self.metrics.worker.jobs_running.set_function(lambda: len(self._running))

    def started(self, record: JobRecord, queue: str = DEFAULT_QUEUE) -> None:
        """An attempt began: `record` is running, with its started_at set; it came from
        `queue`."""
        started_at = record.started_at or utcnow()
        self._running[record.id] = (record.name, record.attempts, started_at, queue)
        self._child(self.metrics.worker.jobs_started, record.name).inc()
        if record.attempts == 1:
            wait = (started_at - record.created_at).total_seconds()
            self._child(self.metrics.worker.queue_wait, record.name).observe(max(0.0, wait))

    def redelivered(self, record: JobRecord) -> None:
        """The attempt about to start runs the job again after its previous delivery ended
        without an outcome (its worker died or was cut off, and its lease ran out)."""
        self.metrics.worker.jobs_redelivered.labels(record.name).inc()

    def retried(self, record: JobRecord) -> None:
        """The attempt failed and the job will be retried."""
        self._ended(record, "retried")
        self._child(self.metrics.worker.jobs_retried, record.name).inc()

    def finished(self, record: JobRecord, queue: str = DEFAULT_QUEUE) -> None:
        """The job ended: `record` has its final status and finished_at; `queue` is the one it
        came from, for a job that ended without starting (expired)."""
        outcome = record.status.value
        if outcome not in self._counts:
            return
        running = self._running.get(record.id)
        if running is not None:
            queue = running[3]
        self.tally.count(queue, record.name, failed=outcome in ("failed", "expired"))
        self._ended(record, outcome)
        counter = {
            "succeeded": self.metrics.worker.jobs_succeeded,
            "failed": self.metrics.worker.jobs_failed,
            "cancelled": self.metrics.jobs_cancelled,
            "expired": self.metrics.worker.jobs_expired,
        }.get(outcome)
        if counter is not None:
            self._child(counter, record.name).inc()

    def ended(self, job_id: str) -> None:
        """The attempt is over whatever happened (even an error the runner let through)."""
        self._running.pop(job_id, None)

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            seen_at=utcnow(),
            concurrency=self.concurrency,
            queues=self.queues,
            running=[
                RunningJob(id=job_id, name=name, attempt=attempt, started_at=at, queue=queue)
                for job_id, (name, attempt, at, queue) in sorted(
                    self._running.items(), key=lambda item: item[1][2]
                )
            ],
            metrics_address=self.metrics_address,
            **self._counts,
        )

    def _ended(self, record: JobRecord, outcome: str) -> None:
        self._counts[outcome] += 1
        running = self._running.get(record.id)
        if running is not None:
            ended_at = record.finished_at or utcnow()
            duration = (ended_at - running[2]).total_seconds()
            histogram = self._child(self.metrics.worker.job_duration, record.name, outcome)
            histogram.observe(max(0.0, duration))
        self.ended(record.id)

    def _child(self, metric: Any, *labels: str) -> Any:
        """The metric's child of these labels, looked up once (prometheus_client's `labels`
        takes a lock and checks the labels on every call)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
