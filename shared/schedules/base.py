"""Which due times of the scheduled job types (`@job(schedule=...)`) have run: one claim per
(job type, due time), which the first scheduler to ask wins, so that a due time runs once
however many workers run the scheduler (worker/scheduler.py), and each type's last run, for
GET /schedules. The port is here; its backends are shared/schedules/memory.py (the local mode)
and shared/schedules/redis.py (claims shared by every worker).
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel

LATE_LIMIT = 60.0
"""Seconds after a due time past which a scheduler no longer runs it: it skips it instead."""
CLAIM_TTL = 2 * LATE_LIMIT
"""Seconds a claim is kept. Longer than LATE_LIMIT, so that a scheduler that reaches a due time
late (but within the limit) still finds the claim of the one that ran it, and never runs it a
second time."""


class LastRun(BaseModel):
    """The last run a scheduler submitted for a job type."""

    job_id: str
    due_at: datetime


class ScheduleBook(Protocol):
    async def claim(self, name: str, due: datetime, holder: str) -> bool:
        """Whether `holder` may run this due time of the job type: True for the first claim of
        one (name, due), False for every later one."""
        ...

    async def note_run(self, name: str, due: datetime, job_id: str) -> None:
        """The job submitted for this due time of the job type: its last run from now on."""
        ...

    async def last_runs(self, names: Sequence[str]) -> dict[str, LastRun | None]:
        """Each job type's last run, None for one that never ran (or not since its record of
        it was lost)."""
        ...

    async def close(self) -> None: ...
