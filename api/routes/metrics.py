"""GET /metrics: this api process's Prometheus metrics, with the view of the whole system (queue
depth, workers alive); GET /metrics/targets: the workers' own metrics endpoints, in Prometheus'
HTTP service discovery format."""

import asyncio
import time

from fastapi import APIRouter, Response
from pydantic import BaseModel

from api.deps import CatalogDep, MetricsDep, OverviewDep, SettingsDep
from api.responses import answers
from shared.errors import BackendUnavailableError
from shared.metrics import EXPOSITION_CONTENT_TYPE, Metrics, QueueFigures
from shared.overview import Overview, running_job_ids, waiting_jobs

router = APIRouter(tags=["operations"])

SYSTEM_VIEW_TIMEOUT_SECONDS = 1.0


class ScrapeTargets(BaseModel):
    """One entry of Prometheus' http_sd_configs: where to scrape and the labels to add."""

    targets: list[str]
    labels: dict[str, str]


async def refresh_system_view(metrics: Metrics, overview: Overview, queues: list[str]) -> None:
    """Read the gauges of the whole system from Redis; when Redis does not answer they are
    left out of this scrape (jobcache_system_view_up 0), so that a stale number is never shown
    as a current one."""
    view = metrics.api.system_view
    try:
        async with asyncio.timeout(SYSTEM_VIEW_TIMEOUT_SECONDS):
            # The workers first: a queue holds its running jobs too, which are not waiting.
            workers = await overview.workers()
            depths = await overview.queue_depths(queues, running_job_ids(workers))
    except (BackendUnavailableError, TimeoutError):
        # TimeoutError: this read's own deadline.
        metrics.redis_errors.labels("metrics").inc()
        view.unreadable()
        return
    now = time.time()
    view.show(
        {
            queue: QueueFigures(
                waiting=waiting_jobs(queue, depth, workers),
                deferred=depth.deferred,
                oldest_waiting=0.0
                if depth.oldest_due_at is None
                else max(0.0, now - depth.oldest_due_at),
            )
            for queue, depth in depths.items()
        },
        workers_alive=len(workers),
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {EXPOSITION_CONTENT_TYPE: {}}}},
)
async def metrics(metrics: MetricsDep, overview: OverviewDep, catalog: CatalogDep) -> Response:
    """Prometheus' text format. Counters are this process's; sum them over the api and the
    workers (GET /metrics/targets lists the workers' endpoints)."""
    await refresh_system_view(metrics, overview, catalog.queues)
    return Response(metrics.exposition(), media_type=EXPOSITION_CONTENT_TYPE)


@router.get("/metrics/targets", response_model=list[ScrapeTargets], responses=answers(503))
async def metrics_targets(overview: OverviewDep, settings: SettingsDep) -> list[ScrapeTargets]:
    """The live workers' metrics endpoints, for Prometheus' `http_sd_configs`."""
    return [
        ScrapeTargets(
            targets=[worker.metrics_address],
            labels={"namespace": settings.cache_namespace, "worker": worker.id},
        )
        for worker in await overview.workers()
        if worker.metrics_address is not None
    ]
