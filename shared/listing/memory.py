"""The local mode's job lists: per owner, a list of positions kept in order, pruned as the
Redis index is (entries past the horizon as it is written, whole lists a horizon after their
last write)."""

import bisect
import time
from collections.abc import Sequence

from shared.listing.base import Position
from shared.records.model import JobRecord


class MemoryJobListing:
    def __init__(self, keep_for: int) -> None:
        """`keep_for`: seconds an entry is kept (shared/listing/base.py's horizon)."""
        self._keep_for = keep_for
        self._lists: dict[str | None, list[Position]] = {}
        """Each owner's entries, oldest first."""
        self._written_at: dict[str | None, float] = {}

    async def add(self, records: Sequence[JobRecord]) -> None:
        now = time.time()
        for record in records:
            entries = self._lists.setdefault(record.owner, [])
            bisect.insort(entries, Position.of(record))
            self._written_at[record.owner] = now
        self._prune(now)

    def _prune(self, now: float) -> None:
        horizon = now - self._keep_for
        for owner in [owner for owner, at in self._written_at.items() if at < horizon]:
            del self._lists[owner], self._written_at[owner]
        cutoff = Position(int(horizon * 1_000_000), "")
        for entries in self._lists.values():
            del entries[: bisect.bisect_left(entries, cutoff)]

    async def older(self, owner: str | None, than: Position | None, count: int) -> list[Position]:
        entries = self._lists.get(owner, [])
        end = len(entries) if than is None else bisect.bisect_left(entries, than)
        return entries[max(0, end - count) : end][::-1]

    async def remove(self, owner: str | None, job_ids: Sequence[str]) -> None:
        entries = self._lists.get(owner)
        if entries:
            dropped = set(job_ids)
            entries[:] = [entry for entry in entries if entry.job_id not in dropped]
