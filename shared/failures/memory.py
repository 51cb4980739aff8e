"""The local mode's kept failures: in the api process's memory, gone when it stops, as the
local mode's records and queue are."""

import time
from collections.abc import Sequence
from datetime import datetime

from shared.failures.base import TAKE_PAGE
from shared.queue.base import QueuedJob


class MemoryKeptFailures:
    def __init__(self, ttl: int) -> None:
        self._ttl = ttl
        self._kept: dict[str, tuple[str, float, str]] = {}
        """Each kept job: its queue, when it ended (seconds since the epoch) and its QueuedJob
        as JSON (as the Redis backend holds it, so that both hand back the same)."""

    @property
    def ttl(self) -> int:
        return self._ttl

    def _trim(self) -> None:
        horizon = time.time() - self._ttl
        for job_id in [job_id for job_id, kept in self._kept.items() if kept[1] < horizon]:
            del self._kept[job_id]

    async def keep(self, job: QueuedJob, ended_at: datetime) -> None:
        self._trim()
        self._kept[job.id] = (job.queue, ended_at.timestamp(), job.model_dump_json())

    async def take(self, job_id: str, queue: str, name: str) -> QueuedJob | None:
        self._trim()
        kept = self._kept.get(job_id)
        if kept is None or kept[0] != queue:
            return None
        del self._kept[job_id]
        return QueuedJob.model_validate_json(kept[2])

    async def newest(
        self,
        queue: str,
        *,
        name: str | None = None,
        since: datetime | None = None,
        count: int = TAKE_PAGE,
    ) -> list[str]:
        self._trim()
        earliest = since.timestamp() if since is not None else float("-inf")
        found = [
            (ended, job_id)
            for job_id, (kept_queue, ended, text) in self._kept.items()
            if kept_queue == queue
            and ended >= earliest
            and (name is None or QueuedJob.model_validate_json(text).name == name)
        ]
        found.sort(reverse=True)
        return [job_id for _, job_id in found[:count]]

    async def get_many(self, queue: str, job_ids: Sequence[str]) -> list[QueuedJob]:
        self._trim()
        return [
            QueuedJob.model_validate_json(kept[2])
            for job_id in job_ids
            if (kept := self._kept.get(job_id)) is not None and kept[0] == queue
        ]

    async def count(self, queue: str) -> int:
        self._trim()
        return sum(1 for kept in self._kept.values() if kept[0] == queue)

    async def close(self) -> None:
        self._kept.clear()
