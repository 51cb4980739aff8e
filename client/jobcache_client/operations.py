"""The api's operations without I/O: each one says which requests it needs (`Call`) and reads
their answers into jobs or errors. The sync and async clients only send the calls, so the two
behave the same by construction.

An operation is a generator: it yields a `Call`, is sent back the answer (after the client's
retries; an error answer with its body read) and finally returns its value. Iterations (all
pages, an event stream) are small state objects instead, since they hand out values as they go.
"""

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from jobcache_client.errors import ConnectionFailed, UnexpectedResponse, WaitTimeout, error_for
from jobcache_client.jobs import Job, JobPage, JobStatus, RetriedJobs

T = TypeVar("T")

LONG_POLL_SECONDS = 60.0
"""The longest `?wait` one request asks for (the api's default JOB_WAIT_MAX; an api that
allows less answers sooner, and `wait` asks again)."""
POLL_INTERVAL_MIN = 0.5
"""`wait` polls no more often than this, even against an api that allows no wait at all."""
READ_TIMEOUT_MARGIN = 10.0
"""How much longer than the wait it asked for a request waits for its answer."""
EVENTS_READ_TIMEOUT = 60.0
"""How long a quiet event stream is given (the api sends a heartbeat every 15 s)."""
MAX_KEY_LENGTH = 255
"""The longest Idempotency-Key the api takes."""
DEFAULT_MAX_BATCH = 1000
"""Parameter sets one batch request carries at most (the api's default MAX_BATCH)."""


@dataclass(frozen=True)
class Call:
    """One request to the api, relative to its base URL, and how to send it."""

    method: str
    path: str
    params: Mapping[str, str | int | float] = field(default_factory=dict)
    body: Any = None
    """The JSON body; None: no body."""
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout: float | None = None
    """At least this long to wait for the answer (a long poll, a stream), if longer than the
    client's own read timeout."""
    stream: bool = False
    """Hand the answer over unread (a success only; an error answer is always read)."""
    after: float = 0.0
    """Seconds to wait before sending it."""
    idempotent_submission: bool = False
    """It carries an Idempotency-Key: sent again, it may be answered 409 while the api still
    handles the first sending, which is worth waiting out."""


Operation = Generator[Call, httpx.Response, T]


def job_path(job_id: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}"


def job_type_path(name: str) -> str:
    return f"/jobs/{quote(name, safe='')}"


def new_idempotency_key() -> str:
    return secrets.token_urlsafe(24)


def successful(response: httpx.Response) -> httpx.Response:
    """The answer, if it is a success; else the error it stands for."""
    if not response.is_success:
        raise error_for(response)
    return response


def json_of(response: httpx.Response) -> Any:
    """The body of a successful answer as JSON."""
    try:
        return successful(response).json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UnexpectedResponse(
            f"{response.status_code} answer is not JSON: {response.text[:300]!r}",
            status=response.status_code,
            response=response,
        ) from None


def submission(
    name: str,
    body: Any,
    idempotency_key: str | None,
    callback_url: str | None,
    suffix: str = "",
    expires_in: float | None = None,
) -> Call:
    """A POST of new jobs, with an idempotency key (a new one unless the caller chose it), so
    that sending it again after a lost answer returns the same jobs instead of new ones."""
    return Call(
        "POST",
        job_type_path(name) + suffix,
        params={
            key: value
            for key, value in (("callback_url", callback_url), ("expires_in", expires_in))
            if value is not None
        },
        body=body,
        headers={"Idempotency-Key": idempotency_key or new_idempotency_key()},
        idempotent_submission=True,
    )


def submit(
    name: str,
    parameters: Mapping[str, Any],
    idempotency_key: str | None,
    callback_url: str | None,
    expires_in: float | None = None,
) -> Operation[Job]:
    response = yield submission(
        name, dict(parameters), idempotency_key, callback_url, expires_in=expires_in
    )
    return Job.from_json(json_of(response))


def chunk_keys(idempotency_key: str | None, chunks: int) -> list[str]:
    """One idempotency key per batch request: derived from the caller's, so that submitting
    the same list with the same key again returns the same jobs; new ones otherwise."""
    if idempotency_key is None:
        return [new_idempotency_key() for _ in range(chunks)]
    if chunks == 1:
        return [idempotency_key]
    if len(idempotency_key) > MAX_KEY_LENGTH - 8:
        # Too long to take a suffix within the api's limit: its digest stands for it.
        idempotency_key = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return [f"{idempotency_key}/{number}" for number in range(chunks)]


def submit_many(
    name: str,
    parameters: Sequence[Mapping[str, Any]],
    idempotency_key: str | None,
    callback_url: str | None,
    max_batch: int,
    expires_in: float | None = None,
) -> Operation[list[Job]]:
    """POST /jobs/{name}/batch, a request per `max_batch` parameter sets; the jobs in order.
    An error of a later request says which jobs the earlier ones queued (`submitted`), and its
    issues name items by their index in the whole list."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    starts = range(0, len(parameters), max_batch)
    jobs: list[Job] = []
    for start, key in zip(starts, chunk_keys(idempotency_key, len(starts)), strict=True):
        chunk = [dict(each) for each in parameters[start : start + max_batch]]
        response = yield submission(name, chunk, key, callback_url, "/batch", expires_in)
        if not response.is_success:
            raise error_for(response, item_offset=start, submitted=jobs)
        body = json_of(response)
        records = body.get("jobs") if isinstance(body, dict) else None
        if not isinstance(records, list) or len(records) != len(chunk):
            raise UnexpectedResponse(f"a batch of {len(chunk)} answered {response.text[:300]!r}")
        jobs.extend(Job.from_json(record) for record in records)
    return jobs


def get(job_id: str) -> Operation[Job]:
    response = yield Call("GET", job_path(job_id))
    return Job.from_json(json_of(response))


def wait(
    job_id: str, timeout: float | None, clock: Callable[[], float] = time.monotonic
) -> Operation[Job]:
    """Long polls of GET /jobs/{id}?wait= until the job has finished; WaitTimeout if it has not
    after `timeout` seconds (None: no limit)."""
    started = clock()
    deadline = None if timeout is None else started + timeout
    polled_at = started - POLL_INTERVAL_MIN
    while True:
        now = clock()
        remaining = LONG_POLL_SECONDS if deadline is None else max(0.0, deadline - now)
        seconds = min(LONG_POLL_SECONDS, remaining)
        pause = min(remaining, max(0.0, polled_at + POLL_INTERVAL_MIN - now))
        polled_at = now + pause
        response = yield Call(
            "GET",
            job_path(job_id),
            params={"wait": round(seconds - pause, 3)},
            read_timeout=seconds + READ_TIMEOUT_MARGIN,
            after=pause,
        )
        job = Job.from_json(json_of(response))
        if job.finished:
            return job
        if deadline is not None and clock() >= deadline:
            raise WaitTimeout(
                f"job {job_id} has not finished after {timeout:g}s: it is {job.status}", job
            )


def list_page(
    status: JobStatus | str | None, name: str | None, limit: int | None, cursor: str | None
) -> Operation[JobPage]:
    response = yield list_call(status, name, limit, cursor)
    return JobPage.from_json(json_of(response))


def list_call(
    status: JobStatus | str | None, name: str | None, limit: int | None, cursor: str | None
) -> Call:
    given = {"status": status, "name": name, "limit": limit, "cursor": cursor}
    params = {key: value for key, value in given.items() if value is not None}
    return Call("GET", "/jobs", params=params)


def cancel(job_id: str) -> Operation[Job]:
    response = yield Call("POST", f"{job_path(job_id)}/cancel")
    return Job.from_json(json_of(response))


def retry(job_id: str) -> Operation[Job]:
    response = yield Call("POST", f"{job_path(job_id)}/retry")
    return Job.from_json(json_of(response))


def retry_failed(
    queue: str | None, name: str | None, since: datetime | None
) -> Operation[RetriedJobs]:
    given = {"queue": queue, "name": name, "since": None if since is None else since.isoformat()}
    params = {key: value for key, value in given.items() if value is not None}
    response = yield Call("POST", "/jobs/retry", params=params)
    return RetriedJobs.from_json(json_of(response))


def delete(job_id: str) -> Operation[None]:
    successful((yield Call("DELETE", job_path(job_id))))


def queues() -> Operation[list[dict[str, Any]]]:
    """GET /queues: each queue of the job types, paused or not, with its jobs and workers."""
    listed = json_of((yield Call("GET", "/queues")))
    if not isinstance(listed, list):
        raise UnexpectedResponse(f"GET /queues answered {listed!r}")
    return listed


def steer_queue(name: str, action: str) -> Operation[dict[str, Any]]:
    """POST /queues/{name}/pause or /resume (`action`); the queue as it is then."""
    status = json_of((yield Call("POST", f"/queues/{quote(name, safe='')}/{action}")))
    if not isinstance(status, dict):
        raise UnexpectedResponse(f"POST /queues/{name}/{action} answered {status!r}")
    return status


class Listing:
    """Walking all pages of GET /jobs: the next page's call, until a page says it is the last."""

    def __init__(
        self, status: JobStatus | str | None, name: str | None, page_size: int | None
    ) -> None:
        self.status, self.name, self.page_size = status, name, page_size
        self.cursor: str | None = None
        self.done = False

    def next_call(self) -> Call | None:
        if self.done:
            return None
        return list_call(self.status, self.name, self.page_size, self.cursor)

    def read(self, response: httpx.Response) -> list[Job]:
        page = JobPage.from_json(json_of(response))
        self.cursor, self.done = page.next, page.next is None
        return page.jobs


class EventStream:
    """Following GET /jobs/{id}/events: opens the stream, reads its events into jobs, and
    opens it again (with backoff) if it ends or breaks before the job finished; an event that
    repeats the last one (the record a new stream starts with) is not handed out again."""

    def __init__(self, job_id: str, reopen: int, backoff: Callable[[int], float]) -> None:
        self.job_id = job_id
        self.reopen, self.backoff = reopen, backoff
        self.opened = 0
        self.last: Job | None = None
        self.lost: Exception | None = None

    @property
    def finished(self) -> bool:
        return self.last is not None and self.last.finished

    def next_call(self) -> Call | None:
        if self.finished:
            return None
        if self.opened > self.reopen:
            raise ConnectionFailed(
                f"the event stream of job {self.job_id} ended {self.opened} times before the "
                "job finished"
            ) from self.lost
        self.opened += 1
        return Call(
            "GET",
            f"{job_path(self.job_id)}/events",
            headers={"Accept": "text/event-stream", "Cache-Control": "no-store"},
            read_timeout=EVENTS_READ_TIMEOUT,
            stream=True,
            after=0.0 if self.opened == 1 else self.backoff(self.opened - 1),
        )

    def check(self, response: httpx.Response) -> httpx.Response:
        """The opened stream's answer, if it is an event stream."""
        content_type = successful(response).headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise UnexpectedResponse(
                f"the events of job {self.job_id} came as {content_type!r}, not an event stream",
                status=response.status_code,
                response=response,
            )
        return response

    def accept(self, event: ServerSentEvent) -> Job | None:
        """The job an event carries, or None if it carries none or the same as the last."""
        if not event.data:
            return None
        try:
            record = event.json()
        except json.JSONDecodeError:
            raise UnexpectedResponse(f"an event that is not JSON: {event.data[:300]!r}") from None
        job = Job.from_json(record)
        if self.last is not None and job.raw == self.last.raw:
            return None
        self.last = job
        return job

    def broke(self, error: Exception) -> None:
        """The stream failed mid-way (it is opened again, unless that was the last try)."""
        self.lost = error
