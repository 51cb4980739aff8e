"""The local mode's history: a dict of intervals in the api process, pruned to the hour as it is
written."""

from shared.history.base import (
    Counts,
    IntervalFigures,
    WaitingReader,
    current_interval,
    oldest_kept,
)


class MemoryHistory:
    def __init__(self) -> None:
        self._intervals: dict[int, IntervalFigures] = {}
        self._sampling: set[int] = set()

    async def add(self, counts: Counts) -> None:
        first = oldest_kept(current_interval())
        for interval, figures in counts.items():
            if interval < first:
                continue
            held = self._intervals.setdefault(interval, IntervalFigures(interval))
            for figure, count in figures.items():
                held.counts[figure] = held.counts.get(figure, 0) + count
        self._prune(first)

    async def sample_waiting(self, interval: int, sampler: str, read: WaitingReader) -> bool:
        held = self._intervals.get(interval)
        if interval in self._sampling or (held is not None and held.waiting is not None):
            return False
        self._sampling.add(interval)
        try:
            waiting = dict(await read())
        finally:
            self._sampling.discard(interval)
        self._intervals.setdefault(interval, IntervalFigures(interval)).waiting = waiting
        self._prune(oldest_kept(current_interval()))
        return True

    async def read(self, since: int, until: int) -> list[IntervalFigures]:
        since = max(since, oldest_kept(current_interval()))
        return [
            IntervalFigures(
                held.interval,
                dict(held.counts),
                None if held.waiting is None else dict(held.waiting),
            )
            for interval, held in sorted(self._intervals.items())
            if since <= interval <= until
        ]

    async def close(self) -> None:
        self._intervals.clear()

    def _prune(self, first: int) -> None:
        for interval in [interval for interval in self._intervals if interval < first]:
            del self._intervals[interval]
