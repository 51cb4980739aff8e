"""The last hour of job figures per interval, for the dashboard: the port, the in-process tally
that workers count into, and the memory and Redis backends."""

from shared.history.base import (
    INTERVAL_SECONDS,
    KEPT_INTERVALS,
    History,
    IntervalFigures,
    interval_of,
)
from shared.history.tally import Tally

__all__ = [
    "INTERVAL_SECONDS",
    "KEPT_INTERVALS",
    "History",
    "IntervalFigures",
    "Tally",
    "interval_of",
]
