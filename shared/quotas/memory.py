"""The local mode's quotas: the counts of one process, in memory."""

import math
import time
from collections import defaultdict

from shared.errors import QuotaExceededError
from shared.quotas.base import IN_FLIGHT_REFUSAL, RATE_REFUSAL, Limits
from shared.records.model import UNFINISHED_RECORD_TTL


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
