"""Maps domain errors (shared/errors.py) to HTTP responses: a Redis failure reaches here only as
BackendUnavailableError, raised where the Redis backends call Redis."""

import email.message
import json
import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.responses import Response

from shared.errors import (
    BackendUnavailableError,
    CallbackRefusedError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    IdempotentJobsUnavailableError,
    JobAlreadyFinishedError,
    JobNotFoundError,
    JobNotRetryableError,
    QuotaExceededError,
    UnauthorizedError,
    UnknownJobTypeError,
    UnknownQueueError,
)

logger = logging.getLogger(__name__)


async def unknown_job_type(request: Request, error: Exception) -> Response:
    assert isinstance(error, UnknownJobTypeError)
    return JSONResponse(
        status_code=404, content={"detail": str(error), "known_job_types": error.known}
    )


async def unknown_queue(request: Request, error: Exception) -> Response:
    assert isinstance(error, UnknownQueueError)
    return JSONResponse(
        status_code=404, content={"detail": str(error), "known_queues": error.known}
    )


async def job_not_found(request: Request, error: Exception) -> Response:
    return JSONResponse(status_code=404, content={"detail": str(error)})


async def unauthorized(request: Request, error: Exception) -> Response:
    return JSONResponse(
        status_code=401, content={"detail": str(error)}, headers={"WWW-Authenticate": "Bearer"}
    )


async def forbidden(request: Request, error: Exception) -> Response:
    return JSONResponse(status_code=403, content={"detail": str(error)})


async def quota_exceeded(request: Request, error: Exception) -> Response:
    assert isinstance(error, QuotaExceededError)
    return JSONResponse(
        status_code=429,
        content={"detail": str(error)},
        headers={"Retry-After": str(error.retry_after)},
    )


async def already_finished(request: Request, error: Exception) -> Response:
    return JSONResponse(status_code=409, content={"detail": str(error)})


async def idempotency_key_reused(request: Request, error: Exception) -> Response:
    return JSONResponse(status_code=422, content={"detail": str(error)})


async def idempotent_jobs_unavailable(request: Request, error: Exception) -> Response:
    assert isinstance(error, IdempotentJobsUnavailableError)
    # Retry-After only while the first request is under way: a repeat may then succeed.
    headers = None if error.retry_after is None else {"Retry-After": str(error.retry_after)}
    return JSONResponse(status_code=409, content={"detail": str(error)}, headers=headers)


async def callback_refused(request: Request, error: Exception) -> Response:
    """A 422 shaped as FastAPI's own for a query parameter, naming what to change."""
    issue = {
        "loc": ["query", "callback_url"],
        "msg": str(error),
        "type": "callback_refused",
        "input": request.query_params.get("callback_url"),
    }
    return AsciiJSONResponse(status_code=422, content={"detail": [issue]})


async def backend_unavailable(request: Request, error: Exception) -> Response:
    logger.warning("backend unavailable on %s %s: %r", request.method, request.url.path, error)
    return JSONResponse(
        status_code=503,
        content={"detail": "the job store (Redis) is not answering; try again shortly"},
        headers={"Retry-After": "1"},
    )


async def invalid_request(request: Request, error: Exception) -> Response:
    """Malformed JSON is a 400 that says so; a well-formed body with bad fields stays a 422."""
    assert isinstance(error, RequestValidationError)
    for issue in error.errors():
        if issue.get("type") == "json_invalid":
            reason = issue.get("ctx", {}).get("error", "malformed JSON")
            return JSONResponse(
                status_code=400, content={"detail": f"request body is not valid JSON: {reason}"}
            )
    content_type = request.headers.get("content-type")
    if not is_json(content_type) and any(
        issue.get("loc") == ("body",) and (content_type or issue.get("type") != "missing")
        for issue in error.errors()
    ):
        # A body FastAPI did not read as JSON (sent as another type, or with no type at all:
        # an empty body without one stays a 422 that says the body is missing).
        return JSONResponse(
            status_code=415,
            content={
                "detail": "send the parameters as JSON (Content-Type: application/json); "
                f"this body came {f'as {content_type}' if content_type else 'without one'}"
            },
        )
    # ASCII-escaped, so that an input echoed back in an error (a lone surrogate, say) can
    # always be encoded.
    return AsciiJSONResponse(status_code=422, content={"detail": jsonable_encoder(error.errors())})


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this type as JSON: application/json or
    application/<anything>+json, with any parameters."""
    if content_type is None:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class AsciiJSONResponse(JSONResponse):
    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(UnknownJobTypeError, unknown_job_type)
    app.add_exception_handler(JobNotFoundError, job_not_found)
    app.add_exception_handler(JobAlreadyFinishedError, already_finished)
    app.add_exception_handler(JobNotRetryableError, already_finished)
    app.add_exception_handler(UnknownQueueError, unknown_queue)
    app.add_exception_handler(IdempotencyKeyReusedError, idempotency_key_reused)
    app.add_exception_handler(IdempotentJobsUnavailableError, idempotent_jobs_unavailable)
    app.add_exception_handler(CallbackRefusedError, callback_refused)
    app.add_exception_handler(UnauthorizedError, unauthorized)
    app.add_exception_handler(ForbiddenError, forbidden)
    app.add_exception_handler(QuotaExceededError, quota_exceeded)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(BackendUnavailableError, backend_unavailable)
