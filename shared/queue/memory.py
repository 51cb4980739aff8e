"""The local mode's queue: jobs wait in memory for the embedded worker (worker/embedded.py),
so they are lost when the process stops; that is the trade the embedded default makes for
needing no Redis."""

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.queue.base import QueuedJob


@dataclass(frozen=True)
class Delivery:
    """One delivery of a queued job: its first attempt, or a retry."""

    job: QueuedJob
    attempt: int = 1


class MemoryQueue:
    """Jobs due now in arrival order, whatever their queue (one embedded worker serves every
    queue) but a paused one, and retries waiting for their delay."""

    def __init__(self) -> None:
        self._due: dict[str, deque[tuple[int, Delivery]]] = {}
        """Each queue's due deliveries, in the order they became due (numbered by `_order`)."""
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._paused: set[str] = set()
        self._deferred: set[asyncio.TimerHandle] = set()
        self._waiting: dict[str, str] = {}
        """The queue of each job waiting to start."""
        self._cancelled: set[str] = set()
        self._deferred_ids: set[str] = set()
        self._stop_running: list[Callable[[str], object]] = []
        self._due_by_queue: Counter[str] = Counter()
        self._deferred_by_queue: Counter[str] = Counter()
        self._due_since: dict[str, tuple[str, float]] = {}
        """Each job due and not started: its queue, and when it became due (seconds since the
        epoch), in the order they became due."""

    async def enqueue(self, job: QueuedJob) -> None:
        self._waiting[job.id] = job.queue
        self._put(Delivery(job))

    async def enqueue_many(self, jobs: Sequence[QueuedJob]) -> None:
        for job in jobs:
            await self.enqueue(job)

    def _put(self, delivery: Delivery) -> None:
        queue = delivery.job.queue
        self._due_by_queue[queue] += 1
        self._due_since[delivery.job.id] = (queue, time.time())
        self._due.setdefault(queue, deque()).append((next(self._order), delivery))
        self._changed.set()

    async def pause(self, queue: str) -> None:
        self._paused.add(queue)

    async def resume(self, queue: str) -> None:
        self._paused.discard(queue)
        self._changed.set()

    async def paused(self) -> set[str]:
        return set(self._paused)

    async def _next_due(self) -> Delivery:
        """The delivery that became due first among the queues not paused."""
        while True:
            heads = [
                (waiting[0][0], queue)
                for queue, waiting in self._due.items()
                if waiting and queue not in self._paused
            ]
            if heads:
                _, queue = min(heads)
                return self._due[queue].popleft()[1]
            self._changed.clear()
            await self._changed.wait()

    async def cancel(self, job_id: str, queue: str) -> None:
        waiting_on = self._waiting.pop(job_id, None)
        if waiting_on is not None:
            # Dropped where it waits, when its turn (or its retry's delay) comes.
            self._cancelled.add(job_id)
            if job_id in self._deferred_ids:
                self._deferred_ids.discard(job_id)
                self._deferred_by_queue[waiting_on] -= 1
            else:
                self._due_by_queue[waiting_on] -= 1
                self._due_since.pop(job_id, None)
            return
        for stop in self._stop_running:
            stop(job_id)

    async def listen_for_cancels(self, stop: Callable[[str], object]) -> None:
        self._stop_running.append(stop)

    async def take(self) -> Delivery:
        """The next due job that was not cancelled while it waited."""
        while True:
            delivery = await self._next_due()
            if delivery.job.id in self._cancelled:
                self._cancelled.discard(delivery.job.id)
                continue
            self._waiting.pop(delivery.job.id, None)
            self._due_by_queue[delivery.job.queue] -= 1
            self._due_since.pop(delivery.job.id, None)
            return delivery

    def defer(self, delivery: Delivery, delay: float) -> None:
        """Deliver again after `delay` seconds (a retry)."""
        job_id, queue = delivery.job.id, delivery.job.queue
        self._waiting[job_id] = queue
        self._deferred_ids.add(job_id)
        self._deferred_by_queue[queue] += 1

        def due() -> None:
            self._deferred.discard(timer)
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                return
            self._deferred_ids.discard(job_id)
            self._deferred_by_queue[queue] -= 1
            self._put(delivery)

        timer = asyncio.get_running_loop().call_later(delay, due)
        self._deferred.add(timer)

    def backlog(self, queue: str) -> tuple[int, int]:
        """Jobs of the queue waiting to start, and those waiting for a retry's delay."""
        return self._due_by_queue[queue], self._deferred_by_queue[queue]

    def oldest_due_at(self, queue: str) -> float | None:
        """When the job of the queue that has waited longest since it became due did (seconds
        since the epoch); None when none waits. Read by the operator's view only."""
        return next((at for on, at in self._due_since.values() if on == queue), None)

    async def close(self) -> None:
        self._stop_running.clear()
        for timer in self._deferred:
            timer.cancel()
        self._deferred.clear()
