"""Job events: every write of a job record is announced, so that clients can wait on a job
(`?wait`, the event stream) without polling. The port, and the local fan-out that both
backends share: shared/events/memory.py (one process) and shared/events/redis.py (between
processes)."""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from shared.records.model import JobRecord


class JobWatch:
    """The updates of one job's record, in the order they were published."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._updates: asyncio.Queue[JobRecord] = asyncio.Queue()

    def deliver(self, record: JobRecord) -> None:
        self._updates.put_nowait(record)

    async def next(self, within: float) -> JobRecord | None:
        """The next update, or None when none came within `within` seconds."""
        try:
            async with asyncio.timeout(max(within, 0)):
                return await self._updates.get()
        except TimeoutError:
            return None


class JobEvents(Protocol):
    async def publish(self, record: JobRecord, text: str) -> None:
        """Announce a record that was just written; `text` is its JSON."""
        ...

    def watch(self, job_id: str) -> AbstractContextManager[JobWatch]:
        """Receive the updates of one job while the context is open."""
        ...

    def remember(self, record: JobRecord) -> None:
        """Follow a job just submitted here for a few seconds, so that a client waiting on it
        through this process needs no read of the store to start with."""
        ...

    def latest(self, job_id: str) -> JobRecord | None:
        """The newest record of a job followed since its submission here, if any."""
        ...

    async def forget(self, job_id: str) -> None:
        """The job was deleted: no process serves it from what it remembers any more."""
        ...


REMEMBER_SECONDS = 10.0
"""How long a process follows the jobs it submitted (a client usually waits on it at once)."""


class LocalFanOut:
    """Hands published records to the watches open in this process, and keeps the newest
    record of each job this process submitted in the last REMEMBER_SECONDS."""

    def __init__(self) -> None:
        self._watches: dict[str, set[JobWatch]] = {}
        self._remembered: OrderedDict[str, tuple[float, JobRecord]] = OrderedDict()

    def remember(self, record: JobRecord) -> None:
        now = time.monotonic()
        while self._remembered:
            oldest_id, (until, _) = next(iter(self._remembered.items()))
            if until > now:
                break
            del self._remembered[oldest_id]
        self._remembered[record.id] = (now + REMEMBER_SECONDS, record)

    def latest(self, job_id: str) -> JobRecord | None:
        remembered = self._remembered.get(job_id)
        if remembered is None or remembered[0] <= time.monotonic():
            return None
        return remembered[1]

    def drop(self, job_id: str) -> None:
        """Remember the job no longer (a later update of it is not taken up again)."""
        self._remembered.pop(job_id, None)

    @contextmanager
    def watch(self, job_id: str) -> Iterator[JobWatch]:
        job_watch = JobWatch(job_id)
        self._watches.setdefault(job_id, set()).add(job_watch)
        try:
            yield job_watch
        finally:
            watches = self._watches.get(job_id, set())
            watches.discard(job_watch)
            if not watches:
                self._watches.pop(job_id, None)

    def is_watched(self, job_id: str) -> bool:
        return job_id in self._watches or job_id in self._remembered

    def deliver(self, record: JobRecord) -> None:
        remembered = self._remembered.get(record.id)
        if remembered is not None:
            self._remembered[record.id] = (remembered[0], record)
        for job_watch in self._watches.get(record.id, ()):
            job_watch.deliver(record)
