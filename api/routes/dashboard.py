"""GET /dashboard: the operator's live page (static HTML, CSS and JS in api/dashboard/, no build
step, nothing fetched from elsewhere), and GET /dashboard/state, the JSON it polls.

The page holds no data, so anyone may load it; its data is behind the API key when keys are
set (the page asks for one and sends it as `Authorization: Bearer`), and a key sees only its own
jobs there, as everywhere else: other callers' jobs are counted but never named. Its charts are
the backend's history (shared/history/): the page reads the whole hour when it loads, then only
the intervals since the last one it has.
"""

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel

from api.auth import Caller
from api.deps import CallerDep, ServicesDep
from api.responses import answers
from api.routes.health import redis_answers
from shared.activity import WorkerStatus
from shared.backend import Backend
from shared.history import INTERVAL_SECONDS, History, IntervalFigures, interval_of
from shared.history.base import current_interval, oldest_kept
from shared.listing import JobFilter, Position, read_page
from shared.overview import (
    QueueDepth,
    busy_elsewhere,
    running_job_ids,
    running_jobs,
    serving,
    waiting_jobs,
)
from shared.records import JobRecord, Progress, utcnow

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
KEPT_SHOWN = 50
"""The caller's kept failures the page lists, newest first."""
KEPT_READ = 200
"""The newest kept failures of each queue read to find the caller's among them (of every API
key's): the page lists the recent ones, GET /jobs?status=failed pages through the rest."""
ERROR_SHOWN = 300
"""Characters of a failed job's error in the list; the whole record is one click away."""


class QueueView(BaseModel):
    waiting: int
    """Due and not started (estimated from the workers' heartbeats)."""
    running: int
    deferred: int
    """Waiting for a retry's delay."""
    oldest_waiting_seconds: float | None
    """How long the job that has waited longest to start has been due; None when none waits."""


class QueueLine(QueueView):
    """One queue: its jobs, and how many live workers serve it (0: its jobs wait until a
    worker with it in WORKER_QUEUES starts)."""

    name: str
    paused: bool
    """No worker starts its jobs until it is resumed (POST /queues/{name}/resume)."""
    workers: int
    busy_elsewhere: bool
    """Its jobs wait because every slot of the workers serving it is taken, some by jobs of
    other queues (a worker shares its slots among the queues it serves)."""


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


class HealthView(BaseModel):
    """What GET /health says: this api answers (it wrote this), and whether Redis does."""

    api: Literal["up"]
    redis: bool | None
    """Whether both Redis databases (queue and cache) answer; None in the local mode."""


class Ended(BaseModel):
    finished: int
    """Jobs that ended (succeeded, failed, cancelled or expired)."""
    failed: int


class QueueFigures(Ended):
    waiting: int | None
    """Jobs waiting when the interval was sampled; None when it was not (no worker alive)."""


class IntervalView(Ended):
    """One interval of the history: the jobs that ended in it, and those waiting at its
    sample, in all and by queue and job type."""

    start: datetime
    waiting: int | None
    queues: dict[str, QueueFigures]
    types: dict[str, Ended]


class HistoryView(BaseModel):
    interval_seconds: int
    since: datetime
    """The start of the first interval asked for; intervals holding nothing are left out."""
    intervals: list[IntervalView]
    """Oldest first; the last may be the current one, still filling."""


class DashboardState(BaseModel):
    backend: str
    namespace: str
    generated_at: datetime
    health: HealthView
    queue: QueueView
    """All queues together."""
    queues: list[QueueLine]
    workers: list[WorkerStatus]
    recent: list[JobSummary]
    kept_failures: list[JobSummary]
    """The caller's jobs that ended failed, cancelled or expired and are kept to be run again
    (POST /jobs/{id}/retry), newest end first."""
    history: HistoryView
    """The last hour's figures (or those since `history_since`), kept by the backend."""


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


async def recent_jobs(backend: Backend, caller: Caller) -> list[JobSummary]:
    """The caller's last submitted jobs, newest first, from its own list of jobs (GET /jobs's),
    so that another key's busy hour never pushes them out; with a key, the scheduled runs (on
    the open list, readable by every key) among them."""
    owners = [caller.owner] if caller.owner is None else [caller.owner, None]
    pages = await asyncio.gather(
        *(
            read_page(
                backend.listing,
                backend.records,
                owner,
                after=None,
                limit=RECENT_SHOWN,
                only=JobFilter(),
            )
            for owner in owners
        )
    )
    found = [record for page in pages for record in page.jobs if caller.may_read(record)]
    found.sort(key=Position.of, reverse=True)
    return [summary(record) for record in found[:RECENT_SHOWN]]


def queue_lines(
    depths: dict[str, QueueDepth], workers: list[WorkerStatus], paused: set[str]
) -> list[QueueLine]:
    """Each queue's line, from its depth, the live workers' heartbeats and the paused queues."""
    now = time.time()
    lines = []
    for queue, depth in depths.items():
        waiting = waiting_jobs(queue, depth, workers)
        lines.append(
            QueueLine(
                name=queue,
                paused=queue in paused,
                waiting=waiting,
                running=running_jobs(queue, workers),
                deferred=depth.deferred,
                oldest_waiting_seconds=oldest_waiting(depth, now),
                workers=serving(queue, workers),
                busy_elsewhere=busy_elsewhere(queue, waiting, workers),
            )
        )
    return lines


async def kept_failures(backend: Backend, queues: list[str], caller: Caller) -> list[JobSummary]:
    """The caller's own kept failures among the newest of each queue, newest end first: those
    it may run again."""
    failures = backend.failures
    found: list[str] = []
    for queue in queues:
        ids = await failures.newest(queue, count=KEPT_READ)
        found += [
            job.id for job in await failures.get_many(queue, ids) if job.owner == caller.owner
        ]
    records = [
        record
        for record in await backend.records.get_many(found)
        if record.owner == caller.owner and record.status.kept_failure
    ]
    records.sort(key=lambda record: record.finished_at or record.created_at, reverse=True)
    return [summary(record) for record in records[:KEPT_SHOWN]]


def oldest_waiting(depth: QueueDepth, now: float) -> float | None:
    return None if depth.oldest_due_at is None else max(0.0, now - depth.oldest_due_at)


async def history_view(history: History, since: datetime | None) -> HistoryView:
    now = current_interval()
    first = oldest_kept(now)
    if since is not None:
        moment = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        first = max(first, interval_of(moment.timestamp()))
    intervals = [interval_view(figures) for figures in await history.read(first, now)]
    return HistoryView(
        interval_seconds=INTERVAL_SECONDS,
        since=datetime.fromtimestamp(first * INTERVAL_SECONDS, UTC),
        intervals=intervals,
    )


def interval_view(figures: IntervalFigures) -> IntervalView:
    queues: dict[str, QueueFigures] = {}
    types: dict[str, Ended] = {}
    for queue, count in (figures.waiting or {}).items():
        queues[queue] = QueueFigures(finished=0, failed=0, waiting=count)
    for figure, count in sorted(figures.counts.items()):
        line = queues.setdefault(
            figure.queue,
            QueueFigures(finished=0, failed=0, waiting=None if figures.waiting is None else 0),
        )
        kind = types.setdefault(figure.name, Ended(finished=0, failed=0))
        if figure.failed:
            line.failed += count
            kind.failed += count
        else:
            line.finished += count
            kind.finished += count
    return IntervalView(
        start=datetime.fromtimestamp(figures.start, UTC),
        finished=sum(line.finished for line in queues.values()),
        failed=sum(line.failed for line in queues.values()),
        waiting=None if figures.waiting is None else sum(figures.waiting.values()),
        queues=queues,
        types=types,
    )


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


@router.get("/dashboard/state", response_model=DashboardState, responses=answers(401, 422, 503))
async def dashboard_state(
    services: ServicesDep,
    caller: CallerDep,
    history_since: Annotated[
        datetime | None,
        Query(
            description="Only the history's intervals from the one holding this moment on "
            "(ISO 8601; UTC when it names no offset), as a page that has the rest asks; the "
            "whole kept hour without it."
        ),
    ] = None,
) -> DashboardState:
    """Everything the dashboard shows, in one answer: health, queues, live workers with the
    jobs each runs, the last submitted jobs (newest first), the kept failures (failed,
    cancelled or expired, to be run again) and the history of the last hour.
    With API keys, a key's own jobs only (and the scheduled runs); the ids of others' running
    jobs are blank."""
    backend = services.backend
    catalog = services.catalog
    # The workers first: a queue holds its running jobs too, which are not waiting.
    workers = await backend.overview.workers()
    depths, paused, recent, kept, history, redis_ok = await asyncio.gather(
        backend.overview.queue_depths(catalog.queues, running_job_ids(workers)),
        backend.queue.paused(),
        recent_jobs(backend, caller),
        kept_failures(backend, catalog.queues, caller),
        history_view(backend.history, history_since),
        redis_answers(services),
    )
    queues = queue_lines(depths, workers, paused)
    shown = workers
    if caller.owner is not None:
        visible = {job.id for job in recent}
        shown = [unnamed_unless_visible(worker, visible) for worker in workers]
    ages = [
        line.oldest_waiting_seconds for line in queues if line.oldest_waiting_seconds is not None
    ]
    return DashboardState(
        backend=services.settings.cache_backend,
        namespace=services.settings.cache_namespace,
        generated_at=utcnow(),
        health=HealthView(api="up", redis=redis_ok),
        queue=QueueView(
            waiting=sum(line.waiting for line in queues),
            running=sum(len(worker.running) for worker in workers),
            deferred=sum(line.deferred for line in queues),
            oldest_waiting_seconds=max(ages, default=None),
        ),
        queues=queues,
        workers=shown,
        recent=recent,
        kept_failures=kept,
        history=history,
    )
