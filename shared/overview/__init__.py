"""The operator's view: the port and its memory and Redis backends."""

from shared.overview.base import (
    Overview,
    QueueDepth,
    busy_elsewhere,
    running_job_ids,
    running_jobs,
    serving,
    waiting_by_queue,
    waiting_jobs,
)

__all__ = [
    "Overview",
    "QueueDepth",
    "busy_elsewhere",
    "running_job_ids",
    "running_jobs",
    "serving",
    "waiting_by_queue",
    "waiting_jobs",
]
