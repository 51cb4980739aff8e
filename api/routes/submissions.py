"""Submitting jobs: POST /jobs/{name} and POST /jobs/{name}/batch for each declared job type,
with its parameter model as the body, an Idempotency-Key and a callback_url."""

import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import GenericAlias
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.background import BackgroundTask

from api.auth import Caller
from api.deps import Call, CallDep, ServicesDep
from api.job_views import views_of
from api.methods import FallbackRoute
from api.observability import note_submitted
from api.responses import answers
from api.routes.jobs import job_path, record_response
from api.services import Services
from shared.catalog import Catalog, JobType
from shared.errors import UnknownJobTypeError
from shared.idempotency import KEY_PATTERN, IdempotentRequest
from shared.quotas import Limits
from shared.records import UNFINISHED_RECORD_TTL, utcnow
from shared.submission import submit_jobs
from shared.webhooks.addresses import MAX_URL_LENGTH
from shared.webhooks.policy import CallbackPolicy

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Makes the request safe to repeat: 1 to 255 visible ASCII characters, new "
        "for each request. A repeat by the same caller within 24 hours (same job type, body "
        "and query) makes no new job: it is answered 200 with the first request's jobs as they "
        "are now and `Idempotent-Replayed: true`; the same key with another request is a 422.",
    ),
]
CallbackUrl = Annotated[
    str | None,
    Query(
        max_length=MAX_URL_LENGTH,
        description="An http(s) URL to POST the job's record to when it has finished "
        "(succeeded, failed, cancelled or expired), signed as Standard Webhooks says; its host "
        "must be in WEBHOOK_ALLOWED_HOSTS. The record's `callback` shows how the delivery goes.",
    ),
]
ExpiresIn = Annotated[
    float | None,
    Query(
        gt=0,
        le=UNFINISHED_RECORD_TTL,
        description="The job's deadline, in seconds from now (at most a day, the longest a job "
        "may wait to start): a job not started by then ends "
        "`expired` (its callback is called, its quota released, its record kept as a failure) "
        "instead of running late. A batch's jobs share it.",
    ),
]
REPLAYED = {"Idempotent-Replayed": "true"}
REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true`: a repeat of an earlier request with this Idempotency-Key.",
        "required": True,
        "schema": {"type": "string"},
    }
}
LOCATION_HEADER = {
    "Location": {
        "description": "The job's path, /jobs/{id}.",
        "required": True,
        "schema": {"type": "string"},
    }
}
SUBMIT_ANSWERS = answers(
    400, 401, 409, 413, 415, 422, 429, 503,
    meaning={
        409: "A repeat of a request with this Idempotency-Key while the first is still under "
        "way, or after its jobs were deleted or expired.",
        422: "The parameters do not match (`detail` lists each field's error), the "
        "Idempotency-Key was used with a different request, or the callback_url is refused "
        "(callbacks are off, or WEBHOOK_ALLOWED_HOSTS does not allow it).",
    },
)  # fmt: skip
SUBMIT_ANSWERS[409]["headers"] = {
    "Retry-After": {
        "description": "While the first request is still under way: seconds to wait before "
        "repeating it (absent when its jobs are gone, and a repeat cannot succeed).",
        "required": False,
        "schema": {"type": "integer"},
    }
}


async def submit(
    job_type: JobType,
    *,
    batch: bool,
    parameters: BaseModel | list[BaseModel],
    request: Request,
    services: Services,
    caller: Caller,
    idempotency_key: str | None,
    callback_url: str | None,
    expires_in: float | None,
) -> Response:
    """Admit the job (a batch: every job, all or none) under the caller's quotas, then record
    and enqueue it; a repeat of an idempotent request gets the jobs it made instead."""
    if isinstance(parameters, list):
        check_batch_size(parameters, services.settings.max_batch)
        payload: Any = [each.model_dump(mode="json") for each in parameters]
        parameter_sets = payload
    else:
        payload = parameters.model_dump(mode="json")
        parameter_sets = (payload,)
    submitted = await submit_jobs(
        services.backend,
        job_type,
        parameter_sets,
        owner=caller.owner,
        limits=quota_limits(services),
        idempotency=idempotent(idempotency_key, job_type, payload, request),
        callback_url=accepted_callback(services, callback_url),
        expires_at=None if expires_in is None else utcnow() + timedelta(seconds=expires_in),
    )
    replayed = REPLAYED if submitted.replayed else {}
    if batch:
        body = ",".join(record.public_json() for record in submitted.records)
        response = Response(
            f'{{"jobs":[{body}]}}', 200 if replayed else 202, replayed, "application/json"
        )
    else:
        record = submitted.records[0]
        location = {"Location": job_path(record.id)}
        response = record_response(record, 200 if replayed else 202, {**location, **replayed})
    if not replayed:
        # Counted after the answer is sent: not on the hot path.
        response.background = BackgroundTask(note_submitted, request, submitted.records)
    return response


def check_batch_size(parameters: list[BaseModel], most: int) -> None:
    """A 422 for a batch of more than MAX_BATCH parameter sets (FastAPI checked the least)."""
    if len(parameters) > most:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("body",),
                    "msg": f"A batch holds at most {most} parameter sets (MAX_BATCH), not "
                    f"{len(parameters)}: send the rest in another batch",
                    "input": None,
                    "ctx": {"max_length": most},
                }
            ]
        )


def accepted_callback(services: Services, url: str | None) -> str | None:
    """The submission's callback_url, if callbacks may go there; else a 422 saying why."""
    return None if url is None else CallbackPolicy.of(services.settings).accept(url)


def quota_limits(services: Services) -> Limits:
    settings = services.settings
    return Limits(settings.quota_jobs_in_flight, settings.quota_submissions_per_second)


def idempotent(
    key: str | None, job_type: JobType, payload: Any, request: Request
) -> IdempotentRequest | None:
    """The request's Idempotency-Key and fingerprint: its job type, its validated parameters
    and its query (the key itself is never logged nor stored)."""
    if key is None:
        return None
    return IdempotentRequest.of(key, job_type.name, payload, request.query_params.multi_items())


def submit_endpoint(
    job_type: JobType, *, batch_of: int | None = None
) -> Callable[..., Awaitable[Response]]:
    """An endpoint whose body is this job type's parameter model (for a batch, a list of
    1 to `batch_of` of them), so that OpenAPI documents it."""
    body: Any = job_type.parameters
    batch = batch_of is not None
    if batch:
        body = Annotated[
            GenericAlias(list, (job_type.parameters,)),
            Body(
                min_length=1,
                # Documented, not checked by FastAPI: check_batch_size names MAX_BATCH.
                json_schema_extra={"maxItems": batch_of},
                description="The jobs' parameters, one object per job: at most MAX_BATCH.",
            ),
        ]

    async def endpoint(call: Call, **arguments: Any) -> Response:
        return await submit(
            job_type, batch=batch, services=call.services, caller=call.caller, **arguments
        )

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
            for name, annotation in (
                ("parameters", body),
                ("request", Request),
                # One dependency for what the lifespan opened and who asks: each one more
                # costs the hot path a resolution per request.
                ("call", CallDep),
            )
        ]
        + [
            inspect.Parameter(
                "idempotency_key",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=IdempotencyKey,
                default=None,
            ),
            inspect.Parameter(
                "callback_url",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=CallbackUrl,
                default=None,
            ),
            inspect.Parameter(
                "expires_in",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=ExpiresIn,
                default=None,
            ),
        ]
    )
    return endpoint


async def submit_unknown(name: str, services: ServicesDep) -> None:
    """Any name not declared (and not a job id, whose path is a job's): a 404 that lists the
    declared ones."""
    raise UnknownJobTypeError(name, sorted(services.catalog))


def submit_routes(catalog: Catalog, max_batch: int) -> APIRouter:
    """POST /jobs/{name} and POST /jobs/{name}/batch for each job type, with its parameter
    schema and its typed record (api/job_views.py), then for any other name (a 404): built when
    the app starts, from the job types it loaded and its MAX_BATCH."""
    submits = APIRouter(prefix="/jobs", tags=["jobs"])
    for job_type in catalog.values():
        views = views_of(job_type)
        submits.add_api_route(
            f"/{job_type.name}",
            submit_endpoint(job_type),
            methods=["POST"],
            status_code=202,
            response_model=views.record,
            summary=job_type.summary,
            name=f"submit_{job_type.name}",
            responses={
                202: {
                    "description": "Accepted and queued: the job's record.",
                    "headers": LOCATION_HEADER,
                },
                200: {
                    "model": views.record,
                    "description": "A repeat of a request with this Idempotency-Key: the job "
                    "it made, as it is now.",
                    "headers": {**LOCATION_HEADER, **REPLAYED_HEADER},
                },
                **SUBMIT_ANSWERS,
            },
        )
        submits.add_api_route(
            f"/{job_type.name}/batch",
            submit_endpoint(job_type, batch_of=max_batch),
            methods=["POST"],
            status_code=202,
            response_model=views.batch,
            summary=f"{job_type.summary}: a batch of jobs",
            description="Up to MAX_BATCH jobs of this type in one request, all validated "
            "before any is queued (a 422 names each bad one by its index) and queued all or "
            "none, each counted by the quotas.",
            name=f"batch_{job_type.name}",
            responses={
                202: {"description": "Accepted and queued, all of them: their records, in the "
                      "order of the parameter sets."},
                200: {
                    "model": views.batch,
                    "description": "A repeat of a request with this Idempotency-Key: the jobs "
                    "it made, as they are now.",
                    "headers": REPLAYED_HEADER,
                },
                **SUBMIT_ANSWERS,
            },
        )  # fmt: skip
    for fallback in ("/{name}", "/{name}/batch"):
        submits.add_api_route(
            fallback,
            submit_unknown,
            methods=["POST"],
            include_in_schema=False,
            route_class_override=FallbackRoute,
        )
    return submits
