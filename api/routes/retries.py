"""Running failed jobs again: POST /jobs/{id}/retry (the job's owner) and POST /jobs/retry (an
admin, every kept failure of a queue or job type); shared/reruns.py does the work."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict

from api.deps import AdminDep, CallerDep, ServicesDep
from api.responses import answers
from api.routes.jobs import JobId, cancellable_record, record_response
from shared.errors import UnknownJobTypeError, UnknownQueueError
from shared.records import JobView
from shared.reruns import RerunFilter, run_again, run_all_again

router = APIRouter(prefix="/jobs", tags=["jobs"])


class RetriedJobs(BaseModel):
    """What a bulk retry queued again."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    retried: int
    """How many kept failures were queued again."""
    queue: str
    """The queue whose kept failures were run again."""
    name: str | None
    """The job type they were limited to, if any."""
    since: datetime | None
    """Only those that ended at or after this time were run again, if set."""


@router.post(
    "/{job_id:job_id}/retry",
    status_code=202,
    response_model=JobView,
    responses={
        202: {"description": "Queued again under the same id: its record, queued anew."},
        **answers(
            401, 404, 409, 422, 503,
            meaning={
                409: "The job did not end failed, cancelled or expired (it is queued, running "
                "or succeeded), or what it ran with is no longer kept: `detail` says which.",
            },
        ),
    },
)  # fmt: skip
async def retry_job(
    job_id: JobId, request: Request, services: ServicesDep, caller: CallerDep
) -> Response:
    """Run a job that ended failed, cancelled or expired again, under the same id, with the
    parameters it was submitted with (kept FAILED_JOB_TTL). Its attempts start over and its
    record keeps the earlier errors in `previous_errors`; a deadline it had is dropped. Only
    the API key that submitted the job may."""
    record = await cancellable_record(services, job_id, caller)
    again = await run_again(services.backend, services.catalog.get(record.name), record)
    location = {"Location": request.app.url_path_for("get_job", job_id=again.id)}
    return record_response(again, 202, location)


@router.post(
    "/retry",
    status_code=202,
    response_model=RetriedJobs,
    responses=answers(
        401, 403, 404, 422, 503,
        meaning={
            404: "No declared job type uses this queue, or no job type has this name "
            "(`known_queues` or `known_job_types` lists them).",
            422: "Neither `queue` nor `name` is given, `since` is not a time, or the job type "
            "is not on the queue given.",
        },
    ),
)  # fmt: skip
async def retry_failed_jobs(
    services: ServicesDep,
    admin: AdminDep,
    queue: Annotated[
        str | None, Query(description="Run again every kept failure of this queue.")
    ] = None,
    name: Annotated[
        str | None, Query(description="Run again every kept failure of this job type.")
    ] = None,
    since: Annotated[
        datetime | None,
        Query(
            description="Only those that ended at or after this time (ISO 8601; UTC when it "
            "names no offset)."
        ),
    ] = None,
) -> RetriedJobs:
    """Run every kept failure (failed, cancelled or expired, of any API key) of a queue or of
    a job type again, each under its own id as POST /jobs/{id}/retry does. With API_KEYS set
    it takes an admin key (ADMIN_API_KEYS)."""
    catalog = services.catalog
    if name is not None:
        job_type = catalog.get(name)
        if job_type is None:
            raise UnknownJobTypeError(name, sorted(catalog))
        if queue is not None and queue != job_type.queue:
            raise invalid("queue", f"job type {name!r} is on queue {job_type.queue!r}, not here")
        queue = job_type.queue
    if queue is None:
        raise invalid("queue", "give the queue (`queue`) or the job type (`name`) to run again")
    if queue not in catalog.queues:
        raise UnknownQueueError(queue, catalog.queues)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    retried = await run_all_again(services.backend, catalog, RerunFilter(queue, name, since))
    return RetriedJobs(retried=retried, queue=queue, name=name, since=since)


def invalid(field: str, message: str) -> RequestValidationError:
    """A 422 naming the query parameter, as FastAPI's own are."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": message, "input": None}]
    )
