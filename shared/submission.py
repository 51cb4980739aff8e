"""Submitting jobs: the one path by which jobs come to exist, one or a batch at a time, for a
client's POST (the api) and for a scheduled run (worker/scheduler.py).

A submission is admitted under its owner's quotas (each job counts, all or none), recorded (the
records and their owner's list entries: one round trip on Redis) and enqueued (one round trip
however many jobs); a failure on the way takes back what was done, so that a client answered
with an error has no job. With an Idempotency-Key the request first claims the key, naming its
jobs' ids (shared/idempotency/): a repeat gets the jobs the first request made once they are
recorded, and a request that fails gives the key up, so that a retry can make them.
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.backend import Backend
from shared.catalog import JobType
from shared.errors import (
    BackendUnavailableError,
    IdempotencyKeyReusedError,
    IdempotentJobsUnavailableError,
)
from shared.idempotency import Claim, IdempotentRequest
from shared.keys import new_job_id
from shared.logs import job_event
from shared.queue import QueuedJob
from shared.quotas import Limits
from shared.records import Callback, JobRecord
from shared.tracing import current_trace_context

logger = logging.getLogger(__name__)

REPLAY_WAIT = 5.0
"""Longest time a repeat waits for the jobs of a first request that is still under way."""
UNDER_WAY_LIMIT = 30.0
"""A first request whose jobs are not all recorded this long after it claimed its key is no
longer under way: its jobs were deleted or expired since (or its process died first)."""
FIRST_PAUSE = 0.005
LONGEST_PAUSE = 0.1
"""Seconds between a repeat's looks at the first request's jobs, doubling."""


@dataclass(frozen=True)
class Submitted:
    records: list[JobRecord]
    """The jobs' records, in the order of their parameters."""
    replayed: bool = False
    """The jobs an earlier request with the same Idempotency-Key made, as they are now."""


async def submit_jobs(
    backend: Backend,
    job_type: JobType,
    parameter_sets: Sequence[dict[str, Any]],
    *,
    owner: str | None = None,
    limits: Limits | None = None,
    idempotency: IdempotentRequest | None = None,
    scheduled_for: datetime | None = None,
    callback_url: str | None = None,
    expires_at: datetime | None = None,
) -> Submitted:
    """Admit, record and enqueue one job per parameter set, all or none. `parameter_sets` are
    JSON data, already valid for the job type; `owner` is the submitting API key's digest,
    whose `limits` apply; `scheduled_for` is the due time of a scheduled run; `callback_url`,
    already accepted (shared/webhooks/policy.py), is called back when each job finishes;
    `expires_at`: the jobs' deadline, past which one not started ends `expired`."""
    job_ids = [new_job_id() for _ in parameter_sets]
    if idempotency is not None:
        earlier = await claim(backend, idempotency, owner, job_ids)
        if earlier is not None:
            return Submitted(earlier, replayed=True)
    admitted: list[str] = []
    try:
        if owner is not None and limits is not None and limits.any:
            await backend.quotas.admit_many(owner, job_ids, limits)
            admitted = job_ids
        records = await record_and_enqueue(
            backend,
            job_type,
            parameter_sets,
            job_ids,
            owner,
            scheduled_for,
            callback_url,
            expires_at,
        )
    except BaseException:
        await take_back(backend, owner, admitted, idempotency)
        raise
    return Submitted(records)


async def submit_job(
    backend: Backend,
    job_type: JobType,
    parameters: dict[str, Any],
    *,
    owner: str | None = None,
    scheduled_for: datetime | None = None,
) -> JobRecord:
    """One job, outside any quota (a scheduled run): `submit_jobs` of one parameter set."""
    submitted = await submit_jobs(
        backend, job_type, (parameters,), owner=owner, scheduled_for=scheduled_for
    )
    return submitted.records[0]


async def record_and_enqueue(
    backend: Backend,
    job_type: JobType,
    parameter_sets: Sequence[dict[str, Any]],
    job_ids: Sequence[str],
    owner: str | None,
    scheduled_for: datetime | None,
    callback_url: str | None = None,
    expires_at: datetime | None = None,
) -> list[JobRecord]:
    """Record the jobs as queued, then enqueue them on their job type's queue; a failed
    enqueue leaves no record behind. Each job carries the current span's trace context (the
    submitting request's), whose child its attempts' spans are."""
    trace_context = current_trace_context()
    records = [
        JobRecord(
            id=job_id,
            name=job_type.name,
            max_attempts=job_type.max_attempts,
            owner=owner,
            scheduled_for=scheduled_for,
            callback=Callback(url=callback_url) if callback_url is not None else None,
            trace_context=trace_context,
            expires_at=expires_at,
        )
        for job_id in job_ids
    ]
    store = backend.records
    await store.add(records, store.ttl_for(job_type.result_ttl))
    for record in records:
        backend.events.remember(record)
    try:
        await backend.queue.enqueue_many(
            [
                QueuedJob.of(record, parameters, job_type.queue)
                for record, parameters in zip(records, parameter_sets, strict=True)
            ]
        )
    except BaseException:
        await store.delete_many(job_ids)
        await backend.listing.remove(owner, job_ids)
        raise
    if logger.isEnabledFor(logging.INFO):
        for record in records:
            logger.info(
                "job %s (%s) submitted", record.id, job_type.name,
                extra=job_event("job.submitted", record.id, job_type.name),
            )  # fmt: skip
    return records


async def claim(
    backend: Backend, request: IdempotentRequest, owner: str | None, job_ids: Sequence[str]
) -> list[JobRecord] | None:
    """Claim the request's Idempotency-Key for these job ids: None when this request now holds
    it and is to make the jobs; else the records of the jobs the request that holds it made,
    once they exist. Waits up to REPLAY_WAIT for a first request still under way; one that
    failed gave the key up meanwhile, and this request claims it in its place."""
    mine = Claim(job_ids=list(job_ids), fingerprint=request.fingerprint, claimed_at=time.time())
    deadline = time.monotonic() + REPLAY_WAIT
    pause = FIRST_PAUSE
    while True:
        earlier = await backend.idempotency.claim(owner, request.key_digest, mine)
        if earlier is None:
            return None
        if earlier.fingerprint != request.fingerprint:
            raise IdempotencyKeyReusedError()
        records = await backend.records.get_many(earlier.job_ids)
        if len(records) == len(earlier.job_ids):
            return records
        if time.time() - earlier.claimed_at > UNDER_WAY_LIMIT:
            raise IdempotentJobsUnavailableError(
                "what an earlier request with this Idempotency-Key made "
                f"({describe(earlier.job_ids)}) is gone: deleted, or expired after its TTL; "
                "send a new key to submit again"
            )
        if time.monotonic() >= deadline:
            raise IdempotentJobsUnavailableError(
                "an earlier request with this Idempotency-Key is still under way; "
                "try again shortly",
                retry_after=1,
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


def describe(job_ids: Sequence[str]) -> str:
    return f"job {job_ids[0]}" if len(job_ids) == 1 else f"batch of {len(job_ids)} jobs"


async def take_back(
    backend: Backend,
    owner: str | None,
    admitted: Sequence[str],
    idempotency: IdempotentRequest | None,
) -> None:
    """After a failed submission: release the quota its jobs took and give its Idempotency-Key
    up, so that a retry can succeed. A Redis that fails meanwhile leaves them as they are."""
    try:
        if owner is not None and admitted:
            await backend.quotas.release_many(owner, admitted)
        if idempotency is not None:
            await backend.idempotency.give_up(owner, idempotency.key_digest)
    except BackendUnavailableError as error:
        logger.warning("a failed submission could not be taken back: %s", error)
