"""GET /queues, POST /queues/{name}/pause and /resume: the operator's hold on a queue, for a
deploy to roll back or a partner's outage to pass. A paused queue still takes jobs (202); no
worker starts a new one of them until it is resumed, and its running jobs end as usual. The
state is in the backend (Redis: shared by every worker, kept across restarts)."""

import asyncio

from fastapi import APIRouter, HTTPException

from api.deps import AdminDep, ServicesDep
from api.responses import answers
from api.routes.dashboard import QueueLine, queue_lines
from shared.catalog import Catalog
from shared.overview import running_job_ids

router = APIRouter(tags=["queues"])


class QueueStatus(QueueLine):
    """One queue: whether it is paused, its jobs, the live workers serving it and its kept
    failures."""

    kept_failures: int
    """Its jobs that ended failed, cancelled or expired and are kept (FAILED_JOB_TTL), which
    POST /jobs/retry?queue= runs again."""


def known_queue(catalog: Catalog, name: str) -> str:
    if name not in catalog.queues:
        raise HTTPException(
            404, f"no queue {name!r}; the job types are on: {', '.join(catalog.queues)}"
        )
    return name


async def queue_statuses(services: ServicesDep) -> list[QueueStatus]:
    backend = services.backend
    workers = await backend.overview.workers()
    queues = services.catalog.queues
    depths, paused, kept = await asyncio.gather(
        backend.overview.queue_depths(queues, running_job_ids(workers)),
        backend.queue.paused(),
        asyncio.gather(*(backend.failures.count(queue) for queue in queues)),
    )
    kept_by_queue = dict(zip(queues, kept, strict=True))
    return [
        QueueStatus(**line.model_dump(), kept_failures=kept_by_queue[line.name])
        for line in queue_lines(depths, workers, paused)
    ]


@router.get("/queues", response_model=list[QueueStatus], responses=answers(401, 403, 503))
async def list_queues(services: ServicesDep, _admin: AdminDep) -> list[QueueStatus]:
    """Every queue of the job types: paused or not, its waiting, running and deferred jobs,
    how long its oldest waiting job has been due, how many live workers serve it and how many
    of its failures are kept. With
    API keys set, it needs an admin key (ADMIN_API_KEYS)."""
    return await queue_statuses(services)


@router.post(
    "/queues/{name}/pause", response_model=QueueStatus, responses=answers(401, 403, 404, 503)
)
async def pause_queue(name: str, services: ServicesDep, _admin: AdminDep) -> QueueStatus:
    """Start no new job of the queue until it is resumed: submissions are still accepted, and
    the jobs running now end as usual. It holds for every worker, and across restarts."""
    await services.backend.queue.pause(known_queue(services.catalog, name))
    return next(status for status in await queue_statuses(services) if status.name == name)


@router.post(
    "/queues/{name}/resume", response_model=QueueStatus, responses=answers(401, 403, 404, 503)
)
async def resume_queue(name: str, services: ServicesDep, _admin: AdminDep) -> QueueStatus:
    """Start the queue's jobs again, in the order they were queued."""
    await services.backend.queue.resume(known_queue(services.catalog, name))
    return next(status for status in await queue_statuses(services) if status.name == name)
