"""The last hour of job figures, per INTERVAL_SECONDS interval: jobs finished and failed, by
queue and job type, and jobs waiting, by queue. Kept by the backend (shared/history/memory.py,
shared/history/redis.py), so that every api process shows the same hour and a dashboard that
loads draws it at once.

Nothing is written per job: a worker counts its jobs' ends in its own Tally
(shared/history/tally.py) and adds them every heartbeat, in one write (worker/monitoring.py).
Waiting jobs are a sample of the queues' depths, taken once per interval by whichever worker
claims the interval first.
"""

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

INTERVAL_SECONDS = 10
"""The length of one interval; the dashboard draws one point per interval."""
KEPT_INTERVALS = 360
"""How many intervals are kept: an hour."""


@dataclass(frozen=True, order=True)
class Figure:
    """What one count is of: the jobs of one type on one queue that finished (succeeded, failed
    or were cancelled), or, with `failed`, those that failed."""

    queue: str
    name: str
    failed: bool = False


Counts = Mapping[int, Mapping[Figure, int]]
"""Counts by interval (its number: `interval_of`), then by figure."""


@dataclass
class IntervalFigures:
    """What one interval holds."""

    interval: int
    """Its number: its start in seconds since the epoch is `interval * INTERVAL_SECONDS`."""
    counts: dict[Figure, int] = field(default_factory=dict)
    waiting: dict[str, int] | None = None
    """Jobs waiting on each queue when the interval was sampled; None when nobody sampled it
    (no worker was alive)."""

    @property
    def start(self) -> float:
        return float(self.interval * INTERVAL_SECONDS)


def interval_of(moment: float) -> int:
    """The number of the interval `moment` (seconds since the epoch) falls in."""
    return int(moment // INTERVAL_SECONDS)


def current_interval() -> int:
    return interval_of(time.time())


def oldest_kept(now_interval: int) -> int:
    """The first interval still kept when `now_interval` is the current one."""
    return now_interval - KEPT_INTERVALS + 1


WaitingReader = Callable[[], Awaitable[Mapping[str, int]]]
"""Reads how many jobs wait on each queue now."""


class History(Protocol):
    async def add(self, counts: Counts) -> None:
        """Add a tally's counts to their intervals (those past the hour are dropped)."""
        ...

    async def sample_waiting(self, interval: int, sampler: str, read: WaitingReader) -> bool:
        """Record the jobs waiting in `interval`, read by `read`, unless someone (another
        worker) sampled it already; whether `sampler` did."""
        ...

    async def read(self, since: int, until: int) -> list[IntervalFigures]:
        """The intervals from `since` to `until` (numbers, both included; at most the kept
        hour) that hold anything, oldest first."""
        ...

    async def close(self) -> None:
        """Stop; nothing is pending in the store itself."""
        ...
