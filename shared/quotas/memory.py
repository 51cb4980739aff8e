"""The local mode's quotas: the counts of one process, in memory."""

import math
import time
from collections import defaultdict
from collections.abc import Sequence

from shared.quotas.base import Limits, check_batch_fits, refuse
from shared.records.model import UNFINISHED_RECORD_TTL


class MemoryQuotaLedger:
    def __init__(self) -> None:
        self._in_flight: dict[str, dict[str, float]] = defaultdict(dict)
        self._second: dict[str, tuple[int, int]] = {}

    async def admit_many(self, owner: str, job_ids: Sequence[str], limits: Limits) -> None:
        check_batch_fits(limits, len(job_ids))
        now = time.time()
        in_flight = self._in_flight[owner]
        for stale in [job for job, expires in in_flight.items() if expires <= now]:
            del in_flight[stale]
        if limits.jobs_in_flight and len(in_flight) + len(job_ids) > limits.jobs_in_flight:
            raise refuse(limits, len(job_ids), in_flight=True)
        if limits.submissions_per_second:
            second = math.floor(now)
            current, count = self._second.get(owner, (second, 0))
            count = (count if current == second else 0) + len(job_ids)
            if count > limits.submissions_per_second:
                raise refuse(limits, len(job_ids), in_flight=False)
            self._second[owner] = (second, count)
        if limits.jobs_in_flight:
            for job_id in job_ids:
                in_flight[job_id] = now + UNFINISHED_RECORD_TTL

    async def release(self, owner: str, job_id: str) -> None:
        self._in_flight.get(owner, {}).pop(job_id, None)

    async def release_many(self, owner: str, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            await self.release(owner, job_id)
