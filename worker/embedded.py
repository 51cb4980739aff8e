"""The local mode's queue: runs jobs inside the api process through the same runner.

Jobs wait in memory, so they are lost when the process stops; that is the trade the embedded
default makes for needing no Redis.
"""

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.catalog import JobType
from shared.records import JobRecord
from worker.runner import JobRunner, RetryLater

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    job_type: JobType
    job_id: str
    parameters: dict[str, Any]
    created_at: datetime
    owner: str | None
    attempt: int = 1


class EmbeddedWorker:
    """A JobQueue that is its own worker: `concurrency` tasks take jobs from an asyncio queue."""

    def __init__(self, runner: JobRunner, concurrency: int) -> None:
        self._runner = runner
        self._concurrency = concurrency
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._consumers: list[asyncio.Task[None]] = []
        self._retry_timers: set[asyncio.TimerHandle] = set()
        self._waiting: set[str] = set()
        self._cancelled: set[str] = set()

    async def enqueue(
        self, job_type: JobType, record: JobRecord, parameters: dict[str, Any]
    ) -> None:
        self._waiting.add(record.id)
        self._queue.put_nowait(
            Delivery(job_type, record.id, parameters, record.created_at, record.owner)
        )

    async def cancel(self, job_id: str) -> None:
        if job_id in self._waiting:
            self._waiting.discard(job_id)
            self._cancelled.add(job_id)
        else:
            self._runner.cancel(job_id)

    def backlog(self) -> tuple[int, int]:
        """Jobs waiting to start, and jobs waiting for a retry's delay (for the dashboard)."""
        return self._queue.qsize(), len(self._retry_timers)

    def start(self) -> None:
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"embedded-worker-{number}")
            for number in range(self._concurrency)
        ]

    async def close(self) -> None:
        for timer in self._retry_timers:
            timer.cancel()
        pending = set(self._consumers)
        while pending:
            # Cancelled again until done: a cancellation that reaches a consumer in the instant
            # the job task it awaits ends normally is lost, and the consumer would wait on.
            for consumer in pending:
                consumer.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)

    async def _consume(self) -> None:
        while True:
            delivery = await self._queue.get()
            if delivery.job_id in self._cancelled:
                self._cancelled.discard(delivery.job_id)
                continue
            self._waiting.discard(delivery.job_id)
            # A task of its own, so that cancelling this job leaves the consumer running.
            outcome = await asyncio.create_task(
                self._runner.run(
                    delivery.job_type,
                    delivery.job_id,
                    delivery.parameters,
                    attempt=delivery.attempt,
                    created_at=delivery.created_at,
                    owner=delivery.owner,
                ),
                name=f"job {delivery.job_id}",
            )
            if isinstance(outcome, RetryLater):
                self._schedule_retry(outcome.delay, replace(delivery, attempt=delivery.attempt + 1))

    def _schedule_retry(self, delay: float, delivery: Delivery) -> None:
        self._waiting.add(delivery.job_id)

        def deliver() -> None:
            self._retry_timers.discard(timer)
            self._queue.put_nowait(delivery)

        timer = asyncio.get_running_loop().call_later(delay, deliver)
        self._retry_timers.add(timer)
