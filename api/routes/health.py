"""GET /health: which backend is in use and whether Redis answers; GET /health/live and
GET /health/ready for load balancers and orchestrators."""

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import ServicesDep
from api.services import Services

router = APIRouter(tags=["health"])

HEALTH_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    backend: Literal["local", "redis"]
    redis: bool | None
    """Whether both Redis databases (queue and cache) answer; None in the local mode."""


class Liveness(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    redis: bool | None
    """Whether both Redis databases (queue and cache) answer; None in the local mode."""


async def redis_answers(services: Services) -> bool | None:
    """Whether the queue's and the cache's Redis answer a ping in time; None without Redis."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            answers = await services.backend.redis_answers()
    except TimeoutError:
        answers = False
    if answers is False:
        services.metrics.redis_errors.labels("health").inc()
    return answers


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(services: ServicesDep) -> JSONResponse:
    redis_ok = await redis_answers(services)
    body = Health(
        status="unavailable" if redis_ok is False else "ok",
        backend=services.settings.cache_backend,
        redis=redis_ok,
    )
    return JSONResponse(body.model_dump(), status_code=503 if redis_ok is False else 200)


@router.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    """200 while the process serves requests: a failing liveness probe means restart it."""
    return Liveness(status="alive")


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(services: ServicesDep) -> JSONResponse:
    """200 when this api can serve jobs: in the redis mode, both Redis databases answer.
    503 otherwise, so that a load balancer sends requests elsewhere until it recovers."""
    redis_ok = await redis_answers(services)
    body = Readiness(status="unavailable" if redis_ok is False else "ready", redis=redis_ok)
    return JSONResponse(body.model_dump(), status_code=503 if redis_ok is False else 200)
