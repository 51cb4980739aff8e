"""Submitting jobs and reading their records: POST /jobs/{name}, GET /jobs/{id}."""

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from api.deps import QueueDep, RecordsDep
from shared.catalog import JOB_TYPES, JobParameters, JobType
from shared.errors import JobNotFoundError, UnknownJobTypeError
from shared.keys import is_job_id, new_job_id
from shared.queue import JobQueue
from shared.records import JobRecord, RecordStore

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs", tags=["jobs"])


async def submit(
    job_type: JobType,
    parameters: JobParameters,
    request: Request,
    response: Response,
    records: RecordStore,
    queue: JobQueue,
) -> JobRecord:
    """Record the job as queued, then enqueue it; a failed enqueue leaves no record behind."""
    record = JobRecord(id=new_job_id(), name=job_type.name, max_attempts=job_type.max_attempts)
    await records.put(record, records.ttl_for(job_type.result_ttl))
    try:
        await queue.enqueue(job_type, record.id, parameters.model_dump(mode="json"))
    except BaseException:
        await records.delete(record.id)
        raise
    logger.info("job %s (%s) submitted", record.id, job_type.name)
    response.headers["Location"] = request.app.url_path_for("get_job", job_id=record.id)
    return record


def submit_endpoint(job_type: JobType) -> Callable[..., Awaitable[JobRecord]]:
    """An endpoint whose body is this job type's parameter model, so OpenAPI documents it."""

    async def endpoint(**arguments: Any) -> JobRecord:
        return await submit(job_type, **arguments)

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
            for name, annotation in (
                ("parameters", job_type.parameters),
                ("request", Request),
                ("response", Response),
                ("records", RecordsDep),
                ("queue", QueueDep),
            )
        ]
    )
    return endpoint


for _job_type in JOB_TYPES.values():
    router.add_api_route(
        f"/{_job_type.name}",
        submit_endpoint(_job_type),
        methods=["POST"],
        status_code=202,
        response_model=JobRecord,
        summary=_job_type.summary,
        name=f"submit_{_job_type.name}",
        responses={422: {"description": "The parameters do not match the job type"}},
    )


@router.post("/{name}", include_in_schema=False)
async def submit_unknown(name: str) -> None:
    """Any name not declared above: a 404 that lists the declared ones."""
    raise UnknownJobTypeError(name, sorted(JOB_TYPES))


@router.get(
    "/{job_id}",
    name="get_job",
    response_model=JobRecord,
    responses={404: {"description": "No such job, or its record expired"}},
)
async def get_job(
    job_id: Annotated[str, Path(description="The id returned when the job was submitted.")],
    records: RecordsDep,
) -> JobRecord:
    """The job's record: status, result or error, attempts, times and progress."""
    record = await records.get(job_id) if is_job_id(job_id) else None
    if record is None:
        raise JobNotFoundError(job_id)
    return record
