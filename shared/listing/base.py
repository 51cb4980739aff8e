"""Each owner's list of its jobs, newest first, for GET /jobs: the port, the position a page
resumes from (its opaque cursor), and the paging both backends share (shared/listing/memory.py
and shared/listing/redis.py).

The list is an index per owner (an API key's digest, or `open`) of job ids by creation time,
written with the records when jobs are submitted (shared/records/), so that listing never
scans keys. It stays bounded: entries older than the longest a record can live are dropped as
the index is written, and entries whose records have expired are dropped as a page reads them.
A page reads at most MAX_CHUNKS chunks of the index, each with one read of the records.
"""

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from shared.catalog import JobType
from shared.records.model import UNFINISHED_RECORD_TTL, JobRecord, JobStatus

CURSOR_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")
"""A cursor (Position.cursor): 32 URL-safe base64 characters, 24 bytes without padding."""
MAX_LIMIT = 500
"""The most jobs one page holds."""
MAX_CHUNKS = 4
"""Chunks of the index one page reads at most: a page with filters that match few jobs holds
fewer than asked for (and a cursor to the rest) rather than reading the whole index."""
FILTERED_CHUNK = 100
"""The least entries a chunk reads when filters may skip some."""
RETRY_JITTER = 1.5
"""The longest a retry's delay is stretched by its jitter (worker/runner.py)."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, order=True)
class Position:
    """Where a job sits in its owner's list: its creation time in microseconds, then its id
    (the tie-break). Lists are newest first: a later position comes first."""

    created_us: int
    job_id: str

    @classmethod
    def of(cls, record: JobRecord) -> "Position":
        return cls(microseconds(record), record.id)

    @property
    def cursor(self) -> str:
        """The opaque text a client passes back to read on from here: the creation time (8
        bytes) and the id (the 16 bytes a job id spells) in URL-safe base64, 32 characters."""
        raw = self.created_us.to_bytes(8, "big") + base64.urlsafe_b64decode(self.job_id + "==")
        return base64.urlsafe_b64encode(raw).decode("ascii")

    @classmethod
    def from_cursor(cls, cursor: str) -> "Position":
        """The position `cursor` names; ValueError for any text CURSOR_PATTERN does not match.
        Every text it matches is a position (one spelling each), so it documents the cursor
        exactly."""
        if not CURSOR_PATTERN.fullmatch(cursor):
            raise ValueError("not a cursor")
        raw = base64.urlsafe_b64decode(cursor)
        job_id = base64.urlsafe_b64encode(raw[8:]).decode("ascii").rstrip("=")
        return cls(int.from_bytes(raw[:8], "big"), job_id)


def microseconds(record: JobRecord) -> int:
    """A record's creation time as an index score: whole microseconds since the epoch, which a
    Redis score (a double) holds exactly."""
    return (record.created_at - EPOCH) // ONE_MICROSECOND


class RecordReader(Protocol):
    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """The records of these jobs that still exist, in their order (RecordStore's)."""
        ...


class JobListing(Protocol):
    async def add(self, records: Sequence[JobRecord]) -> None:
        """List jobs just submitted, each for its owner, and drop entries past the horizon."""
        ...

    async def older(self, owner: str | None, than: Position | None, count: int) -> list[Position]:
        """Up to `count` entries of the owner's list, newest first, from just after `than`
        (from the newest when None); fewer only where the list ends."""
        ...

    async def remove(self, owner: str | None, job_ids: Sequence[str]) -> None:
        """Take these jobs off the owner's list (deleted, or their records expired)."""
        ...


def longest_record_life(default_ttl: int, job_types: Iterable[JobType]) -> int:
    """Seconds a job's record can outlive its submission, the horizon past which an index
    entry is dropped: a day waiting to start (arq drops a job not started by then), every
    attempt its job type allows at its timeout with the retry delays between them at their
    longest, then its result TTL after the last write, or a day when that write was of an
    unfinished job (its worker died) or of one whose callback was still to be delivered."""
    longest_run = 0.0
    longest_kept = max(default_ttl, UNFINISHED_RECORD_TTL)
    for job_type in job_types:
        delays = sum(job_type.retry_delay * 2.0**attempt for attempt in range(job_type.retries))
        run = job_type.max_attempts * job_type.timeout + delays * RETRY_JITTER
        longest_run = max(longest_run, run)
        longest_kept = max(longest_kept, job_type.result_ttl or 0)
    return int(UNFINISHED_RECORD_TTL + longest_run + longest_kept) + 1


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a page shows: of one status, of one job type, or both; every job when
    neither is set."""

    status: JobStatus | None = None
    name: str | None = None

    @property
    def everything(self) -> bool:
        return self.status is None and self.name is None

    def matches(self, record: JobRecord) -> bool:
        return (self.status is None or record.status is self.status) and (
            self.name is None or record.name == self.name
        )


@dataclass(frozen=True)
class Page:
    jobs: list[JobRecord]
    next: Position | None
    """Where the next page starts; None at the end of the list."""


async def read_page(
    listing: JobListing,
    records: RecordReader,
    owner: str | None,
    *,
    after: Position | None,
    limit: int,
    only: JobFilter,
) -> Page:
    """Up to `limit` of the owner's jobs that `only` matches, newest first, from just after
    `after`. Reads at most MAX_CHUNKS chunks (each one read of the index and one of the
    records), so with filters a page may hold fewer than `limit` jobs and still a cursor.
    Entries whose records are gone are taken off the list, in one more call at the end."""
    jobs: list[JobRecord] = []
    gone: list[str] = []
    page: Page | None = None
    position = after
    for _ in range(MAX_CHUNKS):
        # One entry more than wanted, so that a full page knows whether more follow.
        wanted = limit - len(jobs) + 1
        count = wanted if only.everything else max(wanted, FILTERED_CHUNK)
        entries = await listing.older(owner, position, count)
        found = {
            record.id: record
            for record in await records.get_many([entry.job_id for entry in entries])
        }
        for entry in entries:
            if len(jobs) == limit:
                page = Page(jobs, position)
                break
            position = entry
            record = found.get(entry.job_id)
            if record is None:
                gone.append(entry.job_id)
            elif record.owner == owner and only.matches(record):
                jobs.append(record)
        if page is None and len(entries) < count:
            page = Page(jobs, None)
        elif page is None and len(jobs) == limit:
            page = Page(jobs, position)  # full; the next page may turn out empty
        if page is not None:
            break
    if gone:
        await listing.remove(owner, gone)
    return page or Page(jobs, position)
