"""Reading jobs' records, cancelling and deleting them: GET /jobs/{id} (and its events),
POST /jobs/{id}/cancel, DELETE /jobs/{id}. Submitting is api/routes/submissions.py; listing,
api/routes/listing.py."""

import logging
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from starlette.convertors import Convertor, register_url_convertor

from api.auth import Caller
from api.deps import CallDep, CallerDep, EventsDep, RecordsDep
from api.methods import FallbackRoute
from api.responses import answers
from api.services import Services
from shared.catalog import DEFAULT_QUEUE
from shared.errors import JobAlreadyFinishedError, JobNotFoundError
from shared.events import JobWatch
from shared.keys import JOB_ID, JOB_ID_PATTERN, is_job_id
from shared.logs import job_event
from shared.records import (
    CANCELLED_MESSAGE,
    JobRecord,
    JobStatus,
    JobView,
    RecordStore,
    utcnow,
)
from shared.tracing import current_trace_context

logger = logging.getLogger(__name__)


class JobIdConvertor(Convertor[str]):
    """`{job_id:job_id}`: a path segment that can be a job id. The routes of one job take no
    other path, so that they never take a job type's /jobs/{name} (no name has a job id's 22
    characters: shared/jobs.py); their template, as metrics, traces and OpenAPI name it, stays
    `/jobs/{job_id}`."""

    regex = JOB_ID

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Starlette reads convertors from its one registry when a route is declared, just below.
register_url_convertor("job_id", JobIdConvertor())

router = APIRouter(prefix="/jobs", tags=["jobs"])

EVENT_STREAM_HEARTBEAT_SECONDS = 15.0


def job_path(job_id: str) -> str:
    """GET /jobs/{job_id}'s path: what `url_path_for("get_job", ...)` says, without a search
    of every route per submit (a job id is URL-safe as it is)."""
    return f"{router.prefix}/{job_id}"


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


JobId = Annotated[
    str,
    Path(
        pattern=JOB_ID_PATTERN.pattern,
        description="The id returned when the job was submitted: 22 URL-safe characters. "
        "Any other path segment is no job's: a job type's /jobs/{name}, or no path at all.",
    ),
]


@router.get(
    "/{job_id:job_id}",
    name="get_job",
    response_model=JobView,
    responses=answers(401, 404, 422, 503),
)
async def get_job(
    job_id: JobId,
    call: CallDep,
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
    services, caller = call.services, call.caller
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
    "/{job_id:job_id}/cancel",
    response_model=JobView,
    responses=answers(401, 404, 409, 422, 503),
)
async def cancel_job(job_id: JobId, call: CallDep) -> JobRecord:
    """Cancel a queued or running job: it is taken off the queue, or stopped where it runs,
    and its record, kept, says `cancelled`. A job that has finished cannot be cancelled."""
    record = await cancellable_record(call.services, job_id, call.caller)
    if record.status.finished:
        raise JobAlreadyFinishedError(record.id, record.status.value)
    return await cancel(call.services, record)


@router.delete(
    "/{job_id:job_id}",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "The job is gone: cancelled first if it had not finished."},
        **answers(401, 404, 422, 503),
    },
)
async def delete_job(job_id: JobId, call: CallDep) -> Response:
    """Delete the job's record, cancelling the job first if it has not finished; from then on
    every route of its id answers 404."""
    services, caller = call.services, call.caller
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
    # The callback's span is a child of this request's.
    record.trace_context = current_trace_context() or record.trace_context
    callback = record.callback if call_back else None
    if callback is not None:
        # In the outbox before the end is written, as a worker's runner does
        # (shared/callbacks/base.py); sent once it is, and any worker running the job has let go.
        await backend.callbacks.schedule(record.id, callback.url)
    if record.owner is not None:
        # Before the end is recorded, as a worker's runner does: whoever sees it cancelled may
        # submit again at once.
        await backend.quotas.release(record.owner, record.id)
    # Kept as a failure is, whatever CACHE_TTL says (a worker stopping the job keeps it with
    # its parameters, to be run again: shared/failures/).
    ttl = records.ttl_for(job_type.result_ttl if job_type else None)
    await records.put(record, max(ttl, backend.failures.ttl), replace_only=True)
    if callback is not None:
        await backend.callbacks.ready(record.id)
    logger.info(
        "job %s (%s) cancelled", record.id, record.name,
        extra=job_event("job.cancelled", record.id, record.name, attempt=record.attempts),
    )  # fmt: skip
    return record


EVENT_STREAM = {
    "schema": {"type": "string", "description": "The stream as it comes: its events' lines."},
    # Each event, as OpenAPI 3.2 describes server-sent events and FastAPI documents its own.
    "itemSchema": {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": [status.value for status in JobStatus]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/JobView"},
            },
        },
    },
}


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
    "/{job_id:job_id}/events",
    response_class=Response,
    responses={
        200: {
            "description": "Server-sent events, each a job record (`data:`, a JobView as "
            "JSON) named by its status (`event:`: queued, running, succeeded, failed, "
            "cancelled or expired); comment lines keep a quiet stream alive.",
            "content": {"text/event-stream": EVENT_STREAM},
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


async def no_such_job(job_id: str) -> None:
    """A path segment that cannot be a job id, where no job type's route takes the path either:
    as unknown as an id that never existed."""
    raise JobNotFoundError(job_id)


for fallback, methods in (
    ("/{job_id}", ["GET", "DELETE"]),
    ("/{job_id}/cancel", ["POST"]),
    ("/{job_id}/events", ["GET"]),
):
    router.add_api_route(
        fallback,
        no_such_job,
        methods=methods,
        include_in_schema=False,
        route_class_override=FallbackRoute,
    )
