"""GET /dashboard: the operator's live page (static HTML, CSS and JS in api/dashboard/, no build
step, nothing fetched from elsewhere), and GET /dashboard/state, the JSON it polls.

The page holds no data, so anyone may load it; its data is behind the API key when keys are
set (the page asks for one and sends it as `Authorization: Bearer`), and a key sees only its own
jobs there, as everywhere else: other callers' jobs are counted but never named.
"""

import asyncio
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel

from api.auth import Caller
from api.deps import CallerDep, CatalogDep, OverviewDep, RecordsDep, SettingsDep
from api.responses import answers
from shared.activity import WorkerStatus
from shared.overview import running_jobs, serving, waiting_jobs
from shared.records import JobRecord, Progress, RecordStore, utcnow

router = APIRouter(tags=["operations"])

PAGES = Path(__file__).resolve().parent.parent / "dashboard"
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    # Everything the page needs comes from this api: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}
RECENT_SHOWN = 50
ERROR_SHOWN = 300
"""Characters of a failed job's error in the list; the whole record is one click away."""


class QueueView(BaseModel):
    waiting: int
    """Due and not started (estimated from the workers' heartbeats)."""
    running: int
    deferred: int
    """Waiting for a retry's delay."""


class QueueLine(QueueView):
    """One queue: its jobs, and how many live workers serve it (0: its jobs wait until a
    worker with it in WORKER_QUEUES starts)."""

    name: str
    workers: int


class JobSummary(BaseModel):
    """A recent job as the dashboard lists it: its record without the result."""

    id: str
    name: str
    status: str
    attempts: int
    max_attempts: int
    progress: Progress | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DashboardState(BaseModel):
    backend: str
    namespace: str
    generated_at: datetime
    queue: QueueView
    """All queues together."""
    queues: list[QueueLine]
    workers: list[WorkerStatus]
    recent: list[JobSummary]


def summary(record: JobRecord) -> JobSummary:
    error = record.error
    if error is not None and len(error) > ERROR_SHOWN:
        error = error[: ERROR_SHOWN - 1] + "…"
    return JobSummary(
        id=record.id,
        name=record.name,
        status=record.status.value,
        attempts=record.attempts,
        max_attempts=record.max_attempts,
        progress=record.progress,
        error=error,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


async def recent_jobs(records: RecordStore, job_ids: list[str], caller: Caller) -> list[JobSummary]:
    """The caller's records among these jobs, in one read; expired ones are left out."""
    found = await records.get_many(job_ids)
    return [summary(record) for record in found if caller.may_read(record)]


def unnamed_unless_visible(worker: WorkerStatus, visible: set[str]) -> WorkerStatus:
    """The worker with the ids of jobs the caller may not see blanked out."""
    running = [
        job if job.id in visible else job.model_copy(update={"id": ""}) for job in worker.running
    ]
    return worker.model_copy(update={"running": running})


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> FileResponse:
    return FileResponse(PAGES / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/dashboard/assets/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no dashboard asset {name!r}")
    return FileResponse(PAGES / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/state", response_model=DashboardState, responses=answers(401, 503))
async def dashboard_state(
    overview: OverviewDep,
    records: RecordsDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    caller: CallerDep,
) -> DashboardState:
    """Everything the dashboard shows, in one answer: queue, live workers with the jobs each
    runs, and the last submitted jobs (newest first). With API keys, a key's own jobs only;
    the ids of others' running jobs are blank."""
    depths, workers, job_ids = await asyncio.gather(
        overview.queue_depths(catalog.queues),
        overview.workers(),
        overview.recent_job_ids(RECENT_SHOWN),
    )
    queues = [
        QueueLine(
            name=queue,
            waiting=waiting_jobs(queue, depth, workers),
            running=running_jobs(queue, workers),
            deferred=depth.deferred,
            workers=serving(queue, workers),
        )
        for queue, depth in depths.items()
    ]
    recent = await recent_jobs(records, job_ids, caller)
    shown = workers
    if caller.owner is not None:
        visible = {job.id for job in recent}
        shown = [unnamed_unless_visible(worker, visible) for worker in workers]
    return DashboardState(
        backend=settings.cache_backend,
        namespace=settings.cache_namespace,
        generated_at=utcnow(),
        queue=QueueView(
            waiting=sum(line.waiting for line in queues),
            running=sum(len(worker.running) for worker in workers),
            deferred=sum(line.deferred for line in queues),
        ),
        queues=queues,
        workers=shown,
        recent=recent,
    )
