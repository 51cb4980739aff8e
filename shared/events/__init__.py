"""Job events: the port and its memory and Redis backends."""

from shared.events.base import JobEvents, JobWatch
from shared.events.memory import MemoryJobEvents

__all__ = ["JobEvents", "JobWatch", "MemoryJobEvents"]
