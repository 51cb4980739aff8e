"""Per-key quotas: unfinished jobs and submissions per second. The port and its in-memory
backend (local mode) are here; shared/redis_quotas.py shares the counts between api processes.

The api admits a job before queuing it; the record store releases it when the job's finished
record is written, wherever that happens (worker or api).
"""

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

from shared.errors import QuotaExceededError
from shared.records import UNFINISHED_RECORD_TTL


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


class MemoryQuotaLedger:
    def __init__(self) -> None:
        self._in_flight: dict[str, dict[str, float]] = defaultdict(dict)
        self._second: dict[str, tuple[int, int]] = {}

    async def admit(self, owner: str, job_id: str, limits: Limits) -> None:
        now = time.time()
        in_flight = self._in_flight[owner]
        for stale in [job for job, expires in in_flight.items() if expires <= now]:
            del in_flight[stale]
        if limits.jobs_in_flight and len(in_flight) >= limits.jobs_in_flight:
            raise QuotaExceededError(IN_FLIGHT_REFUSAL.format(limit=limits.jobs_in_flight), 1)
        if limits.submissions_per_second:
            second = math.floor(now)
            current, count = self._second.get(owner, (second, 0))
            count = count + 1 if current == second else 1
            self._second[owner] = (second, count)
            if count > limits.submissions_per_second:
                raise QuotaExceededError(
                    RATE_REFUSAL.format(limit=limits.submissions_per_second), 1
                )
        if limits.jobs_in_flight:
            in_flight[job_id] = now + UNFINISHED_RECORD_TTL

    async def release(self, owner: str, job_id: str) -> None:
        self._in_flight.get(owner, {}).pop(job_id, None)
