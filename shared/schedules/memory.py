"""The local mode's schedule book: one process, one scheduler, its claims in memory."""

import time
from collections.abc import Sequence
from datetime import datetime

from shared.schedules.base import CLAIM_TTL, LastRun


class MemoryScheduleBook:
    def __init__(self) -> None:
        self._claims: dict[tuple[str, datetime], float] = {}
        """(name, due) to the monotonic time its claim expires."""
        self._last_runs: dict[str, LastRun] = {}

    async def claim(self, name: str, due: datetime, holder: str) -> bool:
        now = time.monotonic()
        for stale in [key for key, expires in self._claims.items() if expires <= now]:
            del self._claims[stale]
        if (name, due) in self._claims:
            return False
        self._claims[name, due] = now + CLAIM_TTL
        return True

    async def note_run(self, name: str, due: datetime, job_id: str) -> None:
        self._last_runs[name] = LastRun(job_id=job_id, due_at=due)

    async def last_runs(self, names: Sequence[str]) -> dict[str, LastRun | None]:
        return {name: self._last_runs.get(name) for name in names}

    async def close(self) -> None:
        self._claims.clear()
