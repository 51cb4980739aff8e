"""The deadline of a stopping worker: once its running jobs' grace is over, what it still writes
to Redis (jobs put back, their leases let go, its heartbeat withdrawn) shares STOP_WRITES_SECONDS,
so that a Redis that is down, or whose name no longer resolves, cannot hold the worker.

A worker's clients wait out a Redis outage (shared/outages.py), which is right while it runs and
wrong once it stops: the orchestrator kills a worker that does not exit, and a job the worker
cannot put back is taken by another worker anyway once its lease (WORKER_LEASE) runs out.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

STOP_WRITES_SECONDS = 3.0
"""Seconds a stopping worker gives its last writes, once the grace of its running jobs is over
(or at once when none runs): a worker stops within WORKER_SHUTDOWN_GRACE + this."""

CANCEL_WAIT = 0.5
"""Seconds a write cancelled at the deadline is given to unwind."""

T = TypeVar("T")


class StopDeadline:
    """Unset while the worker runs; `begin` sets it STOP_WRITES_SECONDS ahead."""

    def __init__(self, seconds: float = STOP_WRITES_SECONDS) -> None:
        self.seconds = seconds
        self._at: float | None = None

    def begin(self) -> None:
        """The grace is over: the last writes begin (only the first call counts)."""
        if self._at is None:
            self._at = time.monotonic() + self.seconds

    @property
    def begun(self) -> bool:
        return self._at is not None

    def remaining(self) -> float | None:
        """Seconds left to the deadline (0 once past it); None before the stop began."""
        return None if self._at is None else max(0.0, self._at - time.monotonic())

    def cap(self, seconds: float) -> float:
        """`seconds`, or what is left to the deadline if that is less."""
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)

    async def within(self, write: Awaitable[Any]) -> bool:
        """Await `write` in a task of its own (a cancel of the caller leaves it running, as
        asyncio.shield does) until it is done, or, once the stop has begun, until the
        deadline, when it is cancelled. Whether it completed; its own error is raised."""
        task = asyncio.ensure_future(write)
        await asyncio.wait({task}, timeout=self.remaining())
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_WAIT)
            retrieve_when_done(task)
            return False
        task.result()
        return True


def retrieve_when_done(task: "asyncio.Future[Any]") -> None:
    """Retrieve the error `task` ends with, now or whenever it ends, so that none is reported
    as never retrieved: the worker gave up on it and has nothing to do with it."""

    def retrieve(task: "asyncio.Future[Any]") -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.debug("a write given up at the stop's deadline ended with %r", error)

    task.add_done_callback(retrieve)


async def cancel_leftovers() -> None:
    """Cancel every task of the loop but the current one and give them CANCEL_WAIT seconds to
    end, their errors retrieved: the last step of a worker process, after arq's close, for the
    writes it gave up on and whatever they were waiting for."""
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftovers:
        task.cancel()
        retrieve_when_done(task)
    if leftovers:
        _, pending = await asyncio.wait(leftovers, timeout=CANCEL_WAIT)
        if pending:
            logger.warning(
                "%d tasks did not end when cancelled as the worker stopped: %s",
                len(pending), ", ".join(sorted(task.get_name() for task in pending)),
            )  # fmt: skip
