"""The Python client of jobcache's HTTP API (httpx): `Client` and `AsyncClient`."""

from jobcache_client.async_client import AsyncClient
from jobcache_client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Issue,
    JobcacheError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    StatusError,
    TryAgainLater,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
)
from jobcache_client.jobs import Callback, Job, JobPage, JobStatus, Progress, RetriedJobs
from jobcache_client.retries import RetryPolicy
from jobcache_client.sync_client import Client
from jobcache_client.version import __version__

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Callback",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "Issue",
    "Job",
    "JobPage",
    "JobStatus",
    "JobcacheError",
    "NotFound",
    "PayloadTooLarge",
    "Progress",
    "RateLimited",
    "RetriedJobs",
    "RetryPolicy",
    "ServerError",
    "StatusError",
    "TryAgainLater",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "UnsupportedMediaType",
    "ValidationError",
    "WaitTimeout",
    "__version__",
]
