"""The local mode's outbox: one process, its callbacks in memory (lost when it stops, with
everything else the local mode keeps)."""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.callbacks.base import ClaimedCallback, Claims, wait_recheck


@dataclass
class _Entry:
    url: str
    scheduled_at: float
    due: float
    attempts: int = 0
    first_attempt_at: float | None = None
    lease: str = ""
    waiting: bool = True


class MemoryCallbackOutbox:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._held: set[str] = set()
        self._ready: set[str] = set()
        self._wake: Callable[[], object] = lambda: None

    async def schedule(self, job_id: str, url: str) -> None:
        if job_id not in self._entries:
            now = time.time()
            self._entries[job_id] = _Entry(url, now, now + wait_recheck(0))

    async def ready(self, job_id: str) -> None:
        self._ready.add(job_id)
        self._wake()

    def hold(self, job_id: str) -> None:
        self._held.add(job_id)

    def release(self, job_id: str) -> None:
        self._held.discard(job_id)
        self._ready.add(job_id)
        self._wake()

    async def claim(self, limit: int, lease: float) -> Claims:
        now = time.time()
        ready = [job_id for job_id in self._ready if self._waiting(job_id)]
        self._ready.clear()
        due = sorted(
            (job_id for job_id, entry in self._entries.items() if entry.due <= now),
            key=lambda job_id: self._entries[job_id].due,
        )
        claimed: list[ClaimedCallback] = []
        candidates = list(dict.fromkeys([*ready, *due]))
        for index, job_id in enumerate(candidates):
            if len(claimed) >= limit:
                # Ready ones left over stay ready for the next claim.
                self._ready.update(set(candidates[index:]) & set(ready))
                break
            entry = self._entries[job_id]
            if job_id in self._held:
                entry.waiting = True
                entry.due = now + wait_recheck(now - entry.scheduled_at)
                continue
            entry.lease = secrets.token_hex(8)
            entry.waiting = False
            entry.due = now + lease
            claimed.append(
                ClaimedCallback(
                    job_id, entry.url, entry.attempts, entry.first_attempt_at, entry.lease
                )
            )
        next_due = min((entry.due for entry in self._entries.values()), default=None)
        return Claims(claimed, next_due)

    def _waiting(self, job_id: str) -> bool:
        entry = self._entries.get(job_id)
        return entry is not None and entry.waiting

    async def reschedule(self, claimed: ClaimedCallback, due: float, waiting: bool) -> None:
        entry = self._entries.get(claimed.job_id)
        if entry is None or entry.lease != claimed.token:
            return
        entry.lease = ""
        entry.due = due
        entry.attempts = claimed.attempts
        entry.first_attempt_at = claimed.first_attempt_at
        entry.waiting = waiting

    async def settle(self, claimed: ClaimedCallback) -> None:
        entry = self._entries.get(claimed.job_id)
        if entry is not None and entry.lease == claimed.token:
            del self._entries[claimed.job_id]

    async def watch(self, wake: Callable[[], object]) -> None:
        self._wake = wake

    async def close(self) -> None:
        self._wake = lambda: None
