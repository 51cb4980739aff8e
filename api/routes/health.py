"""GET /health: which backend is in use and whether Redis answers."""

import asyncio
from typing import Literal

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import ServicesDep

router = APIRouter(tags=["health"])

HEALTH_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    backend: Literal["local", "redis"]
    redis: bool | None
    """Whether both Redis databases (queue and cache) answer; None in the local mode."""


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(services: ServicesDep) -> JSONResponse:
    redis_ok: bool | None = None
    if services.redis is not None:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await services.redis.ping()
                await services.cache.raw("ping")
            redis_ok = True
        except (redis.RedisError, OSError, TimeoutError):
            redis_ok = False
    body = Health(
        status="unavailable" if redis_ok is False else "ok",
        backend=services.settings.cache_backend,
        redis=redis_ok,
    )
    return JSONResponse(body.model_dump(), status_code=503 if redis_ok is False else 200)
