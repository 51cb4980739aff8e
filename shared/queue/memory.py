"""The local mode's queue: jobs wait in memory for the embedded worker (worker/embedded.py),
so they are lost when the process stops; that is the trade the embedded default makes for
needing no Redis."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from shared.queue.base import QueuedJob


@dataclass(frozen=True)
class Delivery:
    """One delivery of a queued job: its first attempt, or a retry."""

    job: QueuedJob
    attempt: int = 1


class MemoryQueue:
    """Jobs due now in arrival order, and retries waiting for their delay."""

    def __init__(self) -> None:
        self._due: asyncio.Queue[Delivery] = asyncio.Queue()
        self._deferred: set[asyncio.TimerHandle] = set()
        self._waiting: set[str] = set()
        self._cancelled: set[str] = set()
        self._stop_running: list[Callable[[str], object]] = []

    async def enqueue(self, job: QueuedJob) -> None:
        self._waiting.add(job.id)
        self._due.put_nowait(Delivery(job))

    async def cancel(self, job_id: str) -> None:
        if job_id in self._waiting:
            self._waiting.discard(job_id)
            self._cancelled.add(job_id)
            return
        for stop in self._stop_running:
            stop(job_id)

    async def listen_for_cancels(self, stop: Callable[[str], object]) -> None:
        self._stop_running.append(stop)

    async def take(self) -> Delivery:
        """The next due job that was not cancelled while it waited."""
        while True:
            delivery = await self._due.get()
            if delivery.job.id in self._cancelled:
                self._cancelled.discard(delivery.job.id)
                continue
            self._waiting.discard(delivery.job.id)
            return delivery

    def defer(self, delivery: Delivery, delay: float) -> None:
        """Deliver again after `delay` seconds (a retry)."""
        self._waiting.add(delivery.job.id)

        def due() -> None:
            self._deferred.discard(timer)
            self._due.put_nowait(delivery)

        timer = asyncio.get_running_loop().call_later(delay, due)
        self._deferred.add(timer)

    def backlog(self) -> tuple[int, int]:
        """Jobs waiting to start, and jobs waiting for a retry's delay."""
        return self._due.qsize(), len(self._deferred)

    async def close(self) -> None:
        self._stop_running.clear()
        for timer in self._deferred:
            timer.cancel()
        self._deferred.clear()
