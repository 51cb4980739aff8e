"""Submitting jobs, reading their records, cancelling and deleting them: POST /jobs/{name}
(and /batch), GET /jobs/{id} (and its events), POST /jobs/{id}/cancel, DELETE /jobs/{id}."""

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from types import GenericAlias
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from pydantic import BaseModel
from starlette.background import BackgroundTask

from api.auth import Caller
from api.deps import (
    CallerDep,
    EventsDep,
    RecordsDep,
    ServicesDep,
)
from api.observability import note_submitted
from api.responses import answers
from api.services import Services
from shared.catalog import DEFAULT_QUEUE, Catalog, JobType
from shared.errors import JobAlreadyFinishedError, JobNotFoundError, UnknownJobTypeError
from shared.events import JobWatch
from shared.idempotency import KEY_PATTERN, IdempotentRequest
from shared.keys import is_job_id
from shared.logs import job_event
from shared.quotas import Limits
from shared.records import (
    CANCELLED_MESSAGE,
    JobRecord,
    JobStatus,
    JobView,
    RecordStore,
    utcnow,
)
from shared.submission import submit_jobs
from shared.webhooks.addresses import MAX_URL_LENGTH
from shared.webhooks.policy import CallbackPolicy

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs", tags=["jobs"])

EVENT_STREAM_HEARTBEAT_SECONDS = 15.0


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
        "(succeeded, failed or cancelled), signed as Standard Webhooks says; its host must be "
        "in WEBHOOK_ALLOWED_HOSTS. The record's `callback` shows how the delivery goes.",
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


class JobBatch(BaseModel):
    """The records of a batch's jobs, in the order of its parameter sets."""

    jobs: list[JobView]


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
    )
    replayed = REPLAYED if submitted.replayed else {}
    if batch:
        body = ",".join(record.public_json() for record in submitted.records)
        response = Response(
            f'{{"jobs":[{body}]}}', 200 if replayed else 202, replayed, "application/json"
        )
    else:
        record = submitted.records[0]
        location = {"Location": request.app.url_path_for("get_job", job_id=record.id)}
        response = record_response(record, 200 if replayed else 202, {**location, **replayed})
    if not replayed:
        # Counted and remembered for the dashboard after the answer is sent: not on the hot
        # path.
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
    job_type: JobType, *, batch: bool = False
) -> Callable[..., Awaitable[Response]]:
    """An endpoint whose body is this job type's parameter model (for a batch, a list of
    them), so that OpenAPI documents it."""
    body: Any = job_type.parameters
    if batch:
        body = Annotated[
            GenericAlias(list, (job_type.parameters,)),
            Body(min_length=1, description="The jobs' parameters, one object per job."),
        ]

    async def endpoint(**arguments: Any) -> Response:
        return await submit(job_type, batch=batch, **arguments)

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
            for name, annotation in (
                ("parameters", body),
                ("request", Request),
                # One dependency for what the lifespan opened: each one more costs the hot
                # path a resolution per request.
                ("services", ServicesDep),
                ("caller", CallerDep),
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
        ]
    )
    return endpoint


async def submit_unknown(name: str, services: ServicesDep) -> None:
    """Any name not declared: a 404 that lists the declared ones."""
    raise UnknownJobTypeError(name, sorted(services.catalog))


def submit_routes(catalog: Catalog) -> APIRouter:
    """POST /jobs/{name} and POST /jobs/{name}/batch for each job type, with its parameter
    schema, then for any other name (a 404): built when the app starts, from the job types it
    loaded."""
    submits = APIRouter(prefix="/jobs", tags=["jobs"])
    for job_type in catalog.values():
        submits.add_api_route(
            f"/{job_type.name}",
            submit_endpoint(job_type),
            methods=["POST"],
            status_code=202,
            response_model=JobView,
            summary=job_type.summary,
            name=f"submit_{job_type.name}",
            responses={
                202: {
                    "description": "Accepted and queued: the job's record.",
                    "headers": LOCATION_HEADER,
                },
                200: {
                    "model": JobView,
                    "description": "A repeat of a request with this Idempotency-Key: the job "
                    "it made, as it is now.",
                    "headers": {**LOCATION_HEADER, **REPLAYED_HEADER},
                },
                **SUBMIT_ANSWERS,
            },
        )
        submits.add_api_route(
            f"/{job_type.name}/batch",
            submit_endpoint(job_type, batch=True),
            methods=["POST"],
            status_code=202,
            response_model=JobBatch,
            summary=f"{job_type.summary}: a batch of jobs",
            description="Up to MAX_BATCH jobs of this type in one request, all validated "
            "before any is queued (a 422 names each bad one by its index) and queued all or "
            "none, each counted by the quotas.",
            name=f"batch_{job_type.name}",
            responses={
                202: {"description": "Accepted and queued, all of them: their records, in the "
                      "order of the parameter sets."},
                200: {
                    "model": JobBatch,
                    "description": "A repeat of a request with this Idempotency-Key: the jobs "
                    "it made, as they are now.",
                    "headers": REPLAYED_HEADER,
                },
                **SUBMIT_ANSWERS,
            },
        )  # fmt: skip
    submits.add_api_route("/{name}", submit_unknown, methods=["POST"], include_in_schema=False)
    submits.add_api_route(
        "/{name}/batch", submit_unknown, methods=["POST"], include_in_schema=False
    )
    return submits


def record_response(
    record: JobRecord, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The record as the client sees it, serialized once (by pydantic, without a second
    validation against the response model: this is the hot path)."""
    return Response(record.public_json(), status_code, headers, media_type="application/json")


async def read_record(records: RecordStore, job_id: str, caller: Caller) -> JobRecord:
    """The caller's job (or a scheduled run); someone else's is as unknown to it as an id that
    never existed."""
    record = await records.get(job_id) if is_job_id(job_id) else None
    if record is None or not caller.may_read(record):
        raise JobNotFoundError(job_id)
    return record


JobId = Annotated[str, Path(description="The id returned when the job was submitted.")]


@router.get(
    "/{job_id}",
    name="get_job",
    response_model=JobView,
    responses=answers(401, 404, 422, 503),
)
async def get_job(
    job_id: JobId,
    services: ServicesDep,
    caller: CallerDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            description="Seconds to hold the request until the job has finished "
            "(capped by JOB_WAIT_MAX); the record is returned as it is when they pass.",
        ),
    ] = 0,
) -> Response:
    """The job's record: status, result or error, attempts, times and progress."""
    records, events = services.backend.records, services.backend.events
    if wait <= 0:
        return record_response(await read_record(records, job_id, caller))
    deadline = time.monotonic() + min(wait, services.settings.job_wait_max)
    # Watch before reading, so that an update between the read and the wait is not missed.
    with events.watch(job_id) as updates:
        # A job submitted through this process moments ago needs no read of the store: every
        # change of it since has reached this process.
        record = events.latest(job_id) or await read_record(records, job_id, caller)
        if not caller.may_read(record):
            record = await read_record(records, job_id, caller)
        while not record.status.finished:
            update = await updates.next(deadline - time.monotonic())
            if update is None:
                # Time is up: answer with the record as stored, in case an event was lost.
                return record_response(await read_record(records, job_id, caller))
            record = update
    return record_response(record)


@router.post(
    "/{job_id}/cancel",
    response_model=JobView,
    responses=answers(401, 404, 409, 422, 503),
)
async def cancel_job(job_id: JobId, services: ServicesDep, caller: CallerDep) -> JobRecord:
    """Cancel a queued or running job: it is taken off the queue, or stopped where it runs,
    and its record, kept, says `cancelled`. A job that has finished cannot be cancelled."""
    record = await cancellable_record(services, job_id, caller)
    if record.status.finished:
        raise JobAlreadyFinishedError(record.id, record.status.value)
    return await cancel(services, record)


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "The job is gone: cancelled first if it had not finished."},
        **answers(401, 404, 422, 503),
    },
)
async def delete_job(job_id: JobId, services: ServicesDep, caller: CallerDep) -> Response:
    """Delete the job's record, cancelling the job first if it has not finished; from then on
    every route of its id answers 404."""
    backend = services.backend
    record = await cancellable_record(services, job_id, caller)
    if not record.status.finished:
        # Announced before it goes, so that a client waiting on the job sees it end; not
        # called back, since it is gone (a callback already pending is dropped too).
        await cancel(services, record, call_back=False)
    # The runner only replaces a record that exists (shared/records/store.py): a worker that
    # ends the job after this does not bring it back.
    await backend.records.delete(job_id)
    await backend.listing.remove(record.owner, [job_id])
    await backend.events.forget(job_id)
    logger.info(
        "job %s (%s) deleted", record.id, record.name,
        extra=job_event("job.deleted", record.id, record.name, attempt=record.attempts),
    )  # fmt: skip
    return Response(status_code=204)


async def cancellable_record(services: Services, job_id: str, caller: Caller) -> JobRecord:
    """The caller's own job: a scheduled run, which any key may read, no key may cancel or
    delete."""
    record = await read_record(services.backend.records, job_id, caller)
    if record.owner != caller.owner:
        raise JobNotFoundError(job_id)
    return record


async def cancel(services: Services, record: JobRecord, *, call_back: bool = True) -> JobRecord:
    """Take the unfinished job off its queue or stop it where it runs, record it cancelled
    and release its quota; its callback, if any and `call_back`, goes out once that is done."""
    backend = services.backend
    records = backend.records
    job_type = services.catalog.get(record.name)
    await backend.queue.cancel(record.id, job_type.queue if job_type else DEFAULT_QUEUE)
    if record.status is JobStatus.QUEUED:
        # A running job is counted by the worker that stops it.
        services.metrics.count_cancelled(record.name)
    record.status = JobStatus.CANCELLED
    record.error = CANCELLED_MESSAGE
    record.finished_at = utcnow()
    callback = record.callback if call_back else None
    if callback is not None:
        # In the outbox before the end is written, as a worker's runner does
        # (shared/callbacks/base.py); sent once it is, and any worker running the job has let go.
        await backend.callbacks.schedule(record.id, callback.url)
    await records.put(
        record,
        records.ttl_for(job_type.result_ttl if job_type else None),
        replace_only=True,
    )
    if callback is not None:
        await backend.callbacks.ready(record.id)
    if record.owner is not None:
        await backend.quotas.release(record.owner, record.id)
    logger.info(
        "job %s (%s) cancelled", record.id, record.name,
        extra=job_event("job.cancelled", record.id, record.name, attempt=record.attempts),
    )  # fmt: skip
    return record


def server_sent_event(record: JobRecord) -> bytes:
    return format_sse_event(data_str=record.public_json(), event=record.status.value)


async def record_updates(
    records: RecordStore, updates: JobWatch, record: JobRecord
) -> AsyncIterator[bytes]:
    """The stream's events: the record as it was read, then each change until it finishes."""
    yield server_sent_event(record)
    while not record.status.finished:
        update = await updates.next(EVENT_STREAM_HEARTBEAT_SECONDS)
        if update is None:
            # Quiet for a while: re-read the record (covering a lost event) and keep the
            # connection alive with a comment line.
            update = await records.get(record.id)
            if update is None:
                return
            if update == record:
                yield KEEPALIVE_COMMENT
                continue
        record = update
        yield server_sent_event(record)


@router.get(
    "/{job_id}/events",
    response_class=Response,
    responses={
        200: {
            "description": "Job records, each an event named by its status",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **answers(401, 404, 422, 503),
    },
)
async def job_events(
    job_id: JobId, records: RecordsDep, events: EventsDep, caller: CallerDep
) -> EventSourceResponse:
    """Server-sent events: the record now, then each change of status or progress; the
    stream ends after the finished record."""
    # The watch opens before the first read and stays open for the stream's whole life.
    watching = ExitStack()
    updates = watching.enter_context(events.watch(job_id))
    try:
        record = await read_record(records, job_id, caller)
    except BaseException:
        watching.close()
        raise

    async def stream() -> AsyncIterator[bytes]:
        with watching:
            async for event in record_updates(records, updates, record):
                yield event

    return EventSourceResponse(stream(), headers={"Cache-Control": "no-store"})
