"""The operator's view: the port and its memory and Redis backends."""

from shared.overview.base import (
    Overview,
    QueueDepth,
    running_job_ids,
    running_jobs,
    serving,
    waiting_jobs,
)

__all__ = ["Overview", "QueueDepth", "running_job_ids", "running_jobs", "serving", "waiting_jobs"]
