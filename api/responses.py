"""What the api's error answers look like, for its OpenAPI: the one error body, and each status
a route may answer with what it means, so that routes list their statuses by number
(`responses=answers(401, 404, 503)`) and every route documents an answer the same way."""

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema


class ValidationIssue(BaseModel):
    """One field's error in a 422: where (`loc`, e.g. `["body", "top"]`) and why."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | SkipJsonSchema[None] = None


class ErrorBody(BaseModel):
    """The body of every error answer (api/errors.py writes it)."""

    detail: str | list[ValidationIssue] = Field(
        description="What went wrong: a sentence, or for a 422 each field's error."
    )
    known_job_types: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="With a 404 for an unknown job type: the declared ones."
    )
    known_queues: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="With a 404 for an unknown queue: the declared job types' ones."
    )


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer"},
    }
}

ERROR_ANSWERS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("The body is not valid JSON, or is nested too deeply to parse.", {}),
    401: (
        "API keys are set (API_KEYS) and the request has none, or a wrong one.",
        {
            "WWW-Authenticate": {
                "description": "`Bearer`: send `Authorization: Bearer <key>`.",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    ),
    403: ("The API key is valid but not an admin key (ADMIN_API_KEYS).", {}),
    404: (
        "No job with this id: it never existed, its record expired or was deleted, or another "
        "API key submitted it.",
        {},
    ),
    409: ("The job has already finished: there is nothing to cancel.", {}),
    413: ("The body is larger than MAX_REQUEST_BYTES.", {}),
    415: ("The body was not sent as `Content-Type: application/json`.", {}),
    422: ("The parameters do not match: `detail` lists each field's error.", {}),
    429: ("The API key is over one of its quotas; nothing was queued.", RETRY_AFTER),
    503: ("Redis is not answering.", RETRY_AFTER),
}


def answers(
    *statuses: int, meaning: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these error statuses, each with the error body; `meaning`
    describes a status otherwise than ERROR_ANSWERS does, for a route where it means another
    thing."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, headers = ERROR_ANSWERS[status]
        description = (meaning or {}).get(status, description)
        documented[status] = {"model": ErrorBody, "description": description}
        if headers:
            documented[status]["headers"] = headers
    return documented
