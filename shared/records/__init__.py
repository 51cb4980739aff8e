"""Job records and their store: the record model, the store over aiocache (its memory backend
as it is, shared/records/redis.py for Redis)."""

from shared.records.model import (
    CANCELLED_MESSAGE,
    EXPIRED_MESSAGE,
    KEPT_FAILURES,
    PREVIOUS_ERRORS_KEPT,
    UNFINISHED_RECORD_TTL,
    Callback,
    CallbackState,
    JobRecord,
    JobStatus,
    JobView,
    Progress,
    utcnow,
)
from shared.records.store import RecordPublisher, RecordStore

__all__ = [
    "CANCELLED_MESSAGE",
    "EXPIRED_MESSAGE",
    "KEPT_FAILURES",
    "PREVIOUS_ERRORS_KEPT",
    "UNFINISHED_RECORD_TTL",
    "Callback",
    "CallbackState",
    "JobRecord",
    "JobStatus",
    "JobView",
    "Progress",
    "RecordPublisher",
    "RecordStore",
    "utcnow",
]
