"""When the client sends a request again, and after how long: decided here once, for both
clients. Every request the client sends is safe to repeat (reads, cancels and deletes are
idempotent, and submissions carry an idempotency key), so a failure to connect or a timeout is
retried as well as a 429 or 503; and so is the 409 with a `Retry-After` that a submission sent
again gets while the api still handles its first sending. A refused connection is tried again
once, soon: nothing listens there, and an api that is restarting is back within a moment or not
for a long while, so waiting out the whole backoff only delays the error."""

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from jobcache_client.errors import ConnectionFailed, retry_after_seconds
from jobcache_client.operations import Call

DEFAULT_RETRIES = 5
DEFAULT_REFUSED_RETRIES = 1
RETRIED_STATUSES = frozenset({429, 503})
"""The answers that say nothing was done and to come back later."""
RETRIED_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""Failures of the connection; any other (an unsupported URL, say) would only fail again."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is sent again.

    `retries` is how many times one request may be sent again after its first attempt. A 429 or
    503 is retried after its `Retry-After`, unless that is longer than `max_retry_after` (the
    error is raised at once then: its `retry_after` says when to come back); a failure without
    one waits an exponential backoff (`backoff`, doubling up to `max_backoff`) with jitter. Of
    those retries, `refused_retries` at most may follow a refused connection.
    """

    retries: int = DEFAULT_RETRIES
    refused_retries: int = DEFAULT_REFUSED_RETRIES
    backoff: float = 0.5
    max_backoff: float = 10.0
    max_retry_after: float = 60.0
    jitter: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def backoff_delay(self, retry: int) -> float:
        """Seconds before the `retry`-th retry (from 1): half the exponential step for sure,
        the other half at random, so that clients that failed together do not return together."""
        step = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        return step / 2 + self.jitter() * step / 2

    def attempts(self, call: Call) -> "Attempts":
        return Attempts(self, call)


class Attempts:
    """The attempts of one call: after each failure, whether to send it again and when."""

    def __init__(self, policy: RetryPolicy, call: Call) -> None:
        self.policy = policy
        self.call = call
        self.retries = 0
        self.refusals = 0

    def after_error_answer(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again after this error answer, or None: it is final."""
        retry_after = retry_after_seconds(response)
        if self.retries >= self.policy.retries or not self.retried(response, retry_after):
            return None
        if retry_after is not None and retry_after > self.policy.max_retry_after:
            return None
        self.retries += 1
        return self.policy.backoff_delay(self.retries) if retry_after is None else retry_after

    def retried(self, response: httpx.Response, retry_after: float | None) -> bool:
        # A 409 with a Retry-After to a submission: the api still handles an earlier sending
        # with its key (without one, that request's jobs are gone: final).
        status = response.status_code
        return status in RETRIED_STATUSES or (
            status == 409 and self.call.idempotent_submission and retry_after is not None
        )

    def after_transport_error(self, error: httpx.TransportError, url: str) -> float:
        """Seconds to wait before sending again after the connection failed; ConnectionFailed
        when there is no attempt left or no point in one."""
        refused = was_refused(error)
        if (
            not isinstance(error, RETRIED_TRANSPORT_ERRORS)
            or self.retries >= self.policy.retries
            or (refused and self.refusals >= self.policy.refused_retries)
        ):
            tried = f" (tried {self.retries + 1} times)" if self.retries else ""
            reason = "connection refused" if refused else describe(error)
            raise ConnectionFailed(f"no answer from {url}{tried}: {reason}") from error
        self.retries += 1
        if refused:
            self.refusals += 1
        return self.policy.backoff_delay(self.retries)


def was_refused(error: BaseException) -> bool:
    """Whether the connection was refused: the operating system's ConnectionRefusedError, which
    httpx (through httpcore, and anyio's "All connection attempts failed") has as a cause."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
