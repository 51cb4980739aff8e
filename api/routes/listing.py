"""Listing the caller's jobs: GET /jobs, newest first, filtered and paged by a cursor."""

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from api.deps import CallDep
from api.responses import answers
from shared.listing import CURSOR_PATTERN, MAX_LIMIT, JobFilter, Position, read_page
from shared.records import JobStatus, JobView

router = APIRouter(prefix="/jobs", tags=["jobs"])

DEFAULT_LIMIT = 50


class JobPage(BaseModel):
    """One page of the caller's jobs, newest first."""

    jobs: list[JobView]
    next: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end of the list. With "
        "filters a page may hold fewer than `limit` jobs and still have a next one."
    )


@router.get("", response_model=JobPage, responses=answers(401, 422, 503))
async def list_jobs(
    call: CallDep,
    status: Annotated[
        JobStatus | None, Query(description="Only the jobs with this status.")
    ] = None,
    name: Annotated[
        str | None,
        Query(max_length=64, description="Only the jobs of this job type (none if no job has it)."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="The most jobs on this page.")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | SkipJsonSchema[None],
        Query(
            # Documented, not checked by FastAPI: position_of says what is wrong in words.
            json_schema_extra={"pattern": CURSOR_PATTERN.pattern},
            description="`next` of the previous page, as it came: 32 URL-safe base64 "
            "characters. Any such text is a position in the list; any other is a 422.",
        ),
    ] = None,
) -> Response:
    """The caller's jobs, newest first (by `created_at`, then id): with API keys the key's own,
    else every job submitted without one and the scheduled runs. The cursor holds a position in
    the list, so jobs submitted meanwhile never shift the pages that follow. Each page reads a
    bounded part of the list: with filters it may hold fewer than `limit` jobs while `next` is
    not null."""
    after = None if cursor is None else position_of(cursor)
    backend = call.services.backend
    page = await read_page(
        backend.listing,
        backend.records,
        call.caller.owner,
        after=after,
        limit=limit,
        only=JobFilter(status, name),
    )
    # Serialized once per record, as GET /jobs/{id} does, without a second validation.
    jobs = ",".join(record.public_json() for record in page.jobs)
    after_page = "null" if page.next is None else f'"{page.next.cursor}"'
    return Response(f'{{"jobs":[{jobs}],"next":{after_page}}}', media_type="application/json")


def position_of(cursor: str) -> Position:
    try:
        return Position.from_cursor(cursor)
    except ValueError:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "cursor"),
                    "msg": "Not a cursor of this api: pass the `next` of a page of GET /jobs "
                    "as it came",
                    "input": cursor,
                }
            ]
        ) from None
