"""The job queue: the port, the queued job's message, and the memory and Redis backends."""

from shared.queue.base import JobQueue, QueuedJob

__all__ = ["JobQueue", "QueuedJob"]
