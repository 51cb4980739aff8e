"""Per-key quotas: unfinished jobs and submissions per second. The port is here; its backends
are shared/quotas/memory.py (the local mode) and shared/quotas/redis.py (counts shared by every
api process).

The api admits a job before queuing it; whoever ends the job (the runner, or the api when it
cancels a queued job) releases it, right after writing the finished record.
"""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Limits:
    jobs_in_flight: int
    """0: no limit."""
    submissions_per_second: int
    """0: no limit."""

    @property
    def any(self) -> bool:
        return bool(self.jobs_in_flight or self.submissions_per_second)


IN_FLIGHT_REFUSAL = "this API key has {limit} unfinished jobs, its limit; wait for one to finish"
RATE_REFUSAL = "this API key submitted {limit} jobs this second, its limit"


class QuotaLedger(Protocol):
    async def admit(self, owner: str, job_id: str, limits: Limits) -> None:
        """Count the job against the owner's quotas, or raise QuotaExceededError."""
        ...

    async def release(self, owner: str, job_id: str) -> None:
        """The job has finished: it no longer counts as in flight."""
        ...
