"""GET /schedules: the scheduled job types (`@job(schedule=...)`), when each is next due and
which job was its last run."""

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from api.deps import BackendDep, CatalogDep, get_caller
from api.responses import answers
from shared.records import utcnow
from shared.schedules import LastRun

router = APIRouter(tags=["schedules"], dependencies=[Depends(get_caller)])


class ScheduleView(BaseModel):
    """One scheduled job type."""

    name: str
    schedule: str
    """Its cron expression, in UTC (5 fields, or 6 with seconds first)."""
    queue: str
    parameters: dict[str, Any]
    """The parameters of each run."""
    next_due_at: datetime
    last_run: LastRun | None
    """The job submitted for its last due time (read it at GET /jobs/{id}); null if none ran."""


@router.get("/schedules", response_model=list[ScheduleView], responses=answers(401, 503))
async def list_schedules(catalog: CatalogDep, backend: BackendDep) -> list[ScheduleView]:
    """Each scheduled job type: its schedule and parameters, its next due time and its last
    run. Every run is an ordinary job that no API key owns, readable with any key."""
    scheduled = sorted(catalog.scheduled, key=lambda job_type: job_type.name)
    last_runs = await backend.schedules.last_runs([job_type.name for job_type in scheduled])
    now = utcnow()
    views = []
    for job_type in scheduled:
        assert job_type.schedule is not None
        views.append(
            ScheduleView(
                name=job_type.name,
                schedule=job_type.schedule.expression,
                queue=job_type.queue,
                parameters=dict(job_type.schedule_parameters),
                next_due_at=job_type.schedule.next_after(now),
                last_run=last_runs.get(job_type.name),
            )
        )
    return views
