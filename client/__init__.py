"""The Python client of jobcache's HTTP API (httpx): `Client` and `AsyncClient`."""

from client.async_client import AsyncClient
from client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
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
from client.jobs import Callback, Job, JobPage, JobStatus, Progress
from client.retries import RetryPolicy
from client.sync_client import Client

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Callback",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Issue",
    "Job",
    "JobPage",
    "JobStatus",
    "JobcacheError",
    "NotFound",
    "PayloadTooLarge",
    "Progress",
    "RateLimited",
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
]
