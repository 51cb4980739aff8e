"""The local mode's worker: runs the memory queue's jobs inside the api process, through the same
runner (timeouts, retries, progress, cancels) as a worker process."""

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

from shared.activity import WorkerActivity, new_worker_id
from shared.backend import Backend, InProcessWorker
from shared.callbacks import CallbackOutbox
from shared.catalog import Catalog, JobType
from shared.history.recorder import HistoryRecorder
from shared.metrics import Metrics
from shared.overview.base import HEARTBEAT_SECONDS, waiting_by_queue
from shared.overview.memory import MemoryOverview
from shared.queue.memory import MemoryQueue
from shared.settings import Settings
from worker.deliveries import CallbackDeliverer
from worker.runner import JobRunner, RetryLater, running_jobs
from worker.scheduler import Scheduler

logger = logging.getLogger(__name__)


class EmbeddedWorker:
    """`concurrency` tasks that take jobs from the memory queue and run them."""

    def __init__(
        self,
        queue: MemoryQueue,
        runner: JobRunner,
        concurrency: int,
        job_types: Mapping[str, JobType],
        callbacks: CallbackOutbox | None = None,
    ) -> None:
        """`callbacks`: the outbox whose callbacks of a job wait while an attempt runs it."""
        self._queue = queue
        self._callbacks = callbacks
        self._runner = runner
        self._concurrency = concurrency
        self._job_types = job_types
        self._consumers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"embedded-worker-{number}")
            for number in range(self._concurrency)
        ]

    async def close(self) -> None:
        pending = set(self._consumers)
        while pending:
            # Cancelled again until done: a cancellation that reaches a consumer in the instant
            # the job task it awaits ends normally is lost, and the consumer would wait on.
            for consumer in pending:
                consumer.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)

    async def _consume(self) -> None:
        while True:
            delivery = await self._queue.take()
            job_type = self._job_types[delivery.job.name]
            callbacks = self._callbacks if delivery.job.callback_url is not None else None
            if callbacks is not None:
                callbacks.hold(delivery.job.id)
            try:
                # A task of its own, so that cancelling this job leaves the consumer running.
                outcome = await asyncio.create_task(
                    self._runner.run(job_type, delivery.job, attempt=delivery.attempt),
                    name=f"job {delivery.job.id}",
                )
            finally:
                if callbacks is not None:
                    callbacks.release(delivery.job.id)
            if isinstance(outcome, RetryLater):
                self._queue.defer(replace(delivery, attempt=delivery.attempt + 1), outcome.delay)


def embedded_worker(settings: Settings, catalog: Catalog, metrics: Metrics) -> InProcessWorker:
    """What the api hosts in the local mode: an embedded worker counted in the api's metrics,
    shown in its overview and adding to its history as a worker's heartbeat would."""

    @asynccontextmanager
    async def host(
        backend: Backend, queue: MemoryQueue, overview: MemoryOverview
    ) -> AsyncIterator[None]:
        activity = WorkerActivity(
            metrics,
            worker_id=f"embedded-{new_worker_id()}",
            concurrency=settings.worker_concurrency,
            queues=catalog.queues,
        )
        overview.show_worker(activity.status)

        async def waiting() -> dict[str, int]:
            return await waiting_by_queue(overview, catalog.queues)

        recorder = HistoryRecorder(backend.history, activity.tally, activity.worker_id, waiting)
        recording = asyncio.create_task(
            recorder.keep_flushing(HEARTBEAT_SECONDS), name="embedded-history"
        )
        async with running_jobs(settings, backend, activity) as runner:
            worker = EmbeddedWorker(
                queue, runner, settings.worker_concurrency, catalog, backend.callbacks
            )
            worker.start()
            scheduler = Scheduler(catalog, backend, activity.worker_id, metrics)
            scheduler.start()
            deliverer = CallbackDeliverer(settings, backend, catalog, metrics)
            await deliverer.start()
            try:
                yield
            finally:
                await deliverer.close()
                await scheduler.close()
                await worker.close()
                recording.cancel()
                await asyncio.gather(recording, return_exceptions=True)

    return host
