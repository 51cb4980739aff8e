"""A worker's count of its jobs' ends since its last heartbeat, by interval: counted in the
process as jobs end (no Redis command per job) and added to the history (shared/history/) in
one write per heartbeat."""

import time
from collections import Counter

from shared.history.base import Counts, Figure, interval_of, oldest_kept


class Tally:
    def __init__(self) -> None:
        self._counts: dict[int, Counter[Figure]] = {}

    def count(self, queue: str, name: str, *, failed: bool, at: float | None = None) -> None:
        """A job of type `name` from `queue` ended at `at` (now when None), failed or not."""
        counts = self._counts.setdefault(interval_of(time.time() if at is None else at), Counter())
        counts[Figure(queue, name)] += 1
        if failed:
            counts[Figure(queue, name, failed=True)] += 1

    def take(self) -> dict[int, Counter[Figure]]:
        """What was counted since the last take, which starts the next tally afresh."""
        taken, self._counts = self._counts, {}
        return taken

    def give_back(self, counts: Counts) -> None:
        """Counts a write could not add, to go with the next one; those past the hour are
        dropped, so that a long outage keeps the tally bounded."""
        first = oldest_kept(interval_of(time.time()))
        for interval, figures in counts.items():
            if interval >= first:
                self._counts.setdefault(interval, Counter()).update(figures)
