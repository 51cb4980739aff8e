"""Domain errors, raised by shared code and mapped to HTTP responses or startup failures."""


class JobcacheError(Exception):
    """Base class for every error jobcache raises on purpose."""


class ConfigurationError(JobcacheError):
    """A setting has a value jobcache cannot run with; the message names the setting."""


class StartupError(JobcacheError):
    """A process cannot start because something it needs (Redis) is missing or refuses it."""


class UnknownJobTypeError(JobcacheError):
    """A client asked for a job type that is not declared in the catalog."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown job type {name!r}; known job types: {', '.join(known)}")


class JobNotFoundError(JobcacheError):
    """No record exists for this id: it never existed or its result expired."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"no job with id {job_id!r}: it does not exist, was deleted, or its record expired "
            "after its TTL"
        )


class JobAlreadyFinishedError(JobcacheError):
    """A client asked to change a job that has already finished."""

    def __init__(self, job_id: str, status: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} has already finished ({status}); nothing to cancel")


class JobNotRetryableError(JobcacheError):
    """A client asked to run a job again that is not a kept failure: it has not ended failed,
    cancelled or expired, or what it ran with is no longer kept (the message says which)."""

    def __init__(self, job_id: str, why: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} cannot be run again: {why}")


class UnknownQueueError(JobcacheError):
    """A client named a queue that no declared job type uses."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown queue {name!r}; known queues: {', '.join(known)}")


class BackendUnavailableError(JobcacheError):
    """Redis failed or did not answer: raised where the Redis backends call Redis, so that no
    caller needs to know redis-py's errors; the api answers it with 503 and Retry-After."""


class JobFailedError(JobcacheError):
    """Raised by job code to fail a job with a message meant for the client."""


class RetryableJobError(JobFailedError):
    """Raised by job code when a later attempt may succeed; retried if the job type allows."""


class CallbackRefusedError(JobcacheError):
    """A submission names a callback_url that jobcache will not call: callbacks are off, or the
    URL or its host is not allowed (the message says which, and what to set)."""


class UnauthorizedError(JobcacheError):
    """The request carries no API key, or one that is not configured."""


class ForbiddenError(JobcacheError):
    """The request's API key is valid but may not do this: it is not an admin key."""


class QuotaExceededError(JobcacheError):
    """The caller's key is over one of its quotas, `quota` (`jobs_in_flight` or
    `submissions_per_second`); it may try again after `retry_after` s."""

    def __init__(self, message: str, retry_after: int, quota: str) -> None:
        self.retry_after = retry_after
        self.quota = quota
        super().__init__(message)


class IdempotencyKeyReusedError(JobcacheError):
    """A request's Idempotency-Key was used within 24 h by a request that asked for something
    else (another job type, body or query parameters)."""

    def __init__(self) -> None:
        super().__init__(
            "Idempotency-Key was already used with a different request (another job type, "
            "body or query parameters) in the last 24 hours; send a new key for a new request"
        )


class IdempotentJobsUnavailableError(JobcacheError):
    """A repeat of a request with an Idempotency-Key cannot be answered with the jobs the first
    request made: that request is still under way, or its jobs are gone."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds to wait before repeating, when the first request is still under way; None
        when its jobs are gone (a repeat cannot succeed)."""
