"""The client's errors as types, one per answer the api documents, so that callers catch what
they mean (`except NotFound`) instead of comparing status codes."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from jobcache_client.jobs import Job


@dataclass(frozen=True)
class Issue:
    """One field's error of a 422: where (`loc`, e.g. `("body", "message")`, or
    `("body", 2, "message")` for the third item of a batch) and why."""

    loc: tuple[str | int, ...]
    message: str
    type: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def where(self) -> str:
        """The location without the leading `body`, dotted: `message`, `2.message`."""
        parts = self.loc[1:] if self.loc[:1] == ("body",) else self.loc
        return ".".join(str(part) for part in parts) or "body"


class JobcacheError(Exception):
    """Anything the client could not do. `status` is the HTTP status of the answer that said
    so (None when there was no answer), `detail` the api's `detail` and `response` the answer.
    `submitted` lists the jobs the failed call had queued before it failed: `submit_many`'s
    earlier batches, when a later one failed."""

    submitted: "list[Job]"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: Any = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.response = response
        self.submitted = []


class ConnectionFailed(JobcacheError):
    """The api could not be reached, or did not answer in time, on every attempt."""


class WaitTimeout(JobcacheError):
    """`wait` gave up: the job had not finished when its time ran out. `job` is the record as
    last read."""

    def __init__(self, message: str, job: "Job") -> None:
        super().__init__(message)
        self.job = job


class StatusError(JobcacheError):
    """The api answered with an error status; `status`, `detail` and `response` say which."""

    status: int


class BadRequest(StatusError):
    """400: the body is not valid JSON."""


class Unauthorized(StatusError):
    """401: API keys are set and the request had none, or a wrong one."""


class Forbidden(Unauthorized):
    """403: the API key is valid but may not do this (it is not one of ADMIN_API_KEYS)."""


class NotFound(StatusError):
    """404: no such job (never existed, expired, deleted, or another key's), or no job type of
    that name, in which case `known_job_types` lists the declared ones."""

    known_job_types: list[str] | None = None


class Conflict(StatusError):
    """409: the job has already finished (nothing to cancel)."""


class PayloadTooLarge(StatusError):
    """413: the body is larger than the api's MAX_REQUEST_BYTES."""


class UnsupportedMediaType(StatusError):
    """415: the body was not sent as JSON."""


class ValidationError(StatusError):
    """422: the parameters (or a query parameter) do not match; `issues` lists each one."""

    issues: Sequence[Issue] = ()


class TryAgainLater(StatusError):
    """An answer that says to come back in `retry_after` seconds (None if it did not say);
    raised once the client's own retries are spent."""

    retry_after: float | None = None


class RateLimited(TryAgainLater):
    """429: the API key is over a quota; nothing was queued."""


class Unavailable(TryAgainLater):
    """503: the api's Redis is not answering."""


class ServerError(StatusError):
    """Any other 5xx."""


class UnexpectedResponse(JobcacheError):
    """An answer the api does not document: another status, or a body that is not the JSON
    it should be."""


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The answer's `Retry-After` in seconds (it may be a number or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        sent = parsedate_to_datetime(response.headers["Date"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, (when - sent).total_seconds())


def error_body(response: httpx.Response) -> dict[str, Any]:
    """The api's error body (`{"detail": ...}`), or a stand-in holding the text when the
    answer is not JSON (a proxy's page, say)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"detail": response.text.strip()[:500] or response.reason_phrase}
    return body if isinstance(body, dict) else {"detail": body}


def issues_of(detail: Any, item_offset: int = 0) -> list[Issue]:
    """The issues of a 422's `detail`; `item_offset` is added to the index of a batch's item
    (`["body", index, ...]`), for a batch that was part of a longer list."""
    if not isinstance(detail, list):
        return []
    issues = []
    for item in detail:
        if not isinstance(item, dict):
            continue
        loc = tuple(item.get("loc", ()))
        if item_offset and len(loc) > 1 and loc[0] == "body" and isinstance(loc[1], int):
            loc = ("body", loc[1] + item_offset, *loc[2:])
        issues.append(Issue(loc, str(item.get("msg", "")), str(item.get("type", "")), item))
    return issues


STATUS_ERRORS: dict[int, type[JobcacheError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    429: RateLimited,
    503: Unavailable,
}


def error_for(
    response: httpx.Response, item_offset: int = 0, submitted: Sequence["Job"] = ()
) -> JobcacheError:
    """The error an answer with an error status stands for (its body already read); see
    `issues_of` for `item_offset` and JobcacheError for `submitted`."""
    error = error_of_status(response, item_offset)
    error.submitted = list(submitted)
    return error


def error_of_status(response: httpx.Response, item_offset: int) -> JobcacheError:
    status = response.status_code
    body = error_body(response)
    detail = body.get("detail")
    kind = STATUS_ERRORS.get(status, ServerError if status >= 500 else UnexpectedResponse)
    message = f"{status} {response.reason_phrase}"
    issues = issues_of(detail, item_offset) if kind is ValidationError else []
    known = body.get("known_job_types") if kind is NotFound else None
    if issues:
        message += ": " + "; ".join(f"{issue.where}: {issue.message}" for issue in issues)
    elif detail:
        message += f": {detail}"
    if isinstance(known, list) and not all(str(name) in str(detail) for name in known):
        # The api's own detail names them (`...; known job types: echo, ...`): said once.
        message += f" (known job types: {', '.join(map(str, known))})"
    error = kind(message, status=status, detail=detail, response=response)
    if isinstance(error, ValidationError):
        error.issues = issues
    elif isinstance(error, NotFound) and isinstance(known, list):
        error.known_job_types = [str(name) for name in known]
    elif isinstance(error, TryAgainLater):
        error.retry_after = retry_after_seconds(response)
    return error
