"""What the api counts and logs on the way through requests: one log line per request handled,
requests by route and status, response-cache hits and misses, quota refusals, Redis errors,
and each submitted job."""

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import iter_route_contexts
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.response_cache.decorator import NAMESPACE_STATE_KEY
from api.services import Services
from shared.errors import BackendUnavailableError, QuotaExceededError
from shared.logs import REQUEST_LOGGER
from shared.metrics import ApiFamilies
from shared.records import JobRecord

logger = logging.getLogger(__name__)
request_logger = logging.getLogger(REQUEST_LOGGER)


ExceptionHandler = Callable[[Request, Exception], Response | Awaitable[Response]]


class RequestObserver:
    """ASGI middleware: logs each request once it is answered (method, path, route, status,
    duration; never the query or body), counts and times it by route template and status, and
    counts X-Cache answers of cached endpoints."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        cache_result: str | None = None

        async def observe(message: Message) -> None:
            nonlocal status, cache_result
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-cache":
                        cache_result = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            duration = time.perf_counter() - started
            # The template without convertors: /jobs/{job_id}, not /jobs/{job_id:job_id}.
            route = getattr(scope.get("route"), "path_format", None)
            services: Services | None = getattr(scope["app"].state, "services", None)
            if services is not None:
                metrics = services.metrics.api
                metrics.observe_request(route, scope["method"], status, duration)
                if cache_result in ("hit", "miss"):
                    count_response_cache(metrics, scope, route or scope["path"], cache_result)
            if request_logger.isEnabledFor(logging.INFO):
                log_request(scope, route, status, duration)


def count_response_cache(metrics: ApiFamilies, scope: Scope, route: str, result: str) -> None:
    namespace = str(scope.get("state", {}).get(NAMESPACE_STATE_KEY, ""))
    metrics.response_cache_requests.labels(namespace, route, result).inc()


def expect_routes(app: FastAPI, metrics: ApiFamilies) -> None:
    """Make the error series of every route at 0 (shared/metrics.ApiFamilies.expect_routes)."""
    metrics.expect_routes(
        (route.path_format, sorted(route.methods or ()))
        for route in iter_route_contexts(app.routes)
        if route.path_format is not None
    )


def log_request(scope: Scope, route: str | None, status: int, duration: float) -> None:
    method, path = scope["method"], scope["path"]
    request_logger.info(
        "%s %s %d %.1fms", method, path, status, duration * 1000,
        extra={
            "event": "request",
            "method": method,
            "path": path,
            "route": route,
            "status_code": status,
            "duration": round(duration, 6),
        },
    )  # fmt: skip


def counted(handler: ExceptionHandler) -> ExceptionHandler:
    async def count_then_handle(request: Request, error: Exception) -> Response:
        services: Services | None = getattr(request.app.state, "services", None)
        if services is not None:
            services.metrics.redis_errors.labels("request").inc()
        response = handler(request, error)
        return await response if inspect.isawaitable(response) else response

    return count_then_handle


def count_quota_refusals(app: FastAPI) -> None:
    """Count each 429 by the kind of quota it refused for: wraps the QuotaExceededError
    handler (install it first)."""
    handle = app.exception_handlers[QuotaExceededError]

    async def count_then_handle(request: Request, error: Exception) -> Response:
        assert isinstance(error, QuotaExceededError)
        services: Services | None = getattr(request.app.state, "services", None)
        if services is not None:
            services.metrics.api.quota_refusals.labels(error.quota).inc()
        response = handle(request, error)
        return await response if inspect.isawaitable(response) else response

    app.add_exception_handler(QuotaExceededError, count_then_handle)


def count_redis_errors(app: FastAPI) -> None:
    """Count every Redis failure that a request ran into: wraps the exception handlers that
    turn one into a 503 (install them first)."""
    handlers: dict[Any, ExceptionHandler] = app.exception_handlers
    for error_type, handler in list(handlers.items()):
        if isinstance(error_type, type) and issubclass(error_type, BackendUnavailableError):
            app.add_exception_handler(error_type, counted(handler))


async def note_submitted(request: Request, records: Sequence[JobRecord]) -> None:
    """Count jobs the api just queued (jobcache_jobs_submitted)."""
    services: Services = request.app.state.services
    for record in records:
        services.metrics.jobs_submitted.labels(record.name).inc()
