"""Runs one attempt of a job and writes what happened into its record.

This is the boundary between job code and the service: whatever the job raises becomes a
failed record with a readable error (or a retry, when the job type allows one). Both the arq
worker and the embedded worker of the local mode run jobs through it.
"""

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from shared.catalog import JobType
from shared.errors import JobFailedError, RetryableJobError
from shared.records import JobRecord, JobStatus, RecordStore, utcnow
from worker.context import JobContext
from worker.implementations import Implementation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """The job ended (succeeded or failed); its record says which."""


@dataclass(frozen=True)
class RetryLater:
    """The attempt failed and another is allowed after `delay` seconds."""

    delay: float


Outcome = Finished | RetryLater


def retry_delay(job_type: JobType, attempt: int) -> float:
    """Exponential backoff with jitter, so that retries of many jobs do not arrive together."""
    return float(job_type.retry_delay * 2.0 ** (attempt - 1) * random.uniform(0.5, 1.5))


def describe(error: BaseException, job_type: JobType) -> str:
    """The error as a client reads it in the job record."""
    if isinstance(error, TimeoutError):
        return f"timed out after {job_type.timeout:g}s"
    if isinstance(error, JobFailedError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def encode_result(job_type: JobType, result: object) -> Any:
    """The result as plain JSON data, checked against the declared result model."""
    validated = job_type.result.model_validate(result, from_attributes=True)
    data = validated.model_dump(mode="json")
    json.dumps(data, allow_nan=False)
    return data


class JobRunner:
    """Runs attempts of declared jobs with their implementations, timeouts and retries."""

    def __init__(
        self,
        records: RecordStore,
        implementations: Mapping[str, Implementation],
        cpu_pool: Executor,
    ) -> None:
        self._records = records
        self._implementations = implementations
        self._cpu_pool = cpu_pool

    async def run(
        self,
        job_type: JobType,
        job_id: str,
        parameters: Mapping[str, Any],
        *,
        attempt: int,
        created_at: datetime,
    ) -> Outcome:
        ttl = self._records.ttl_for(job_type.result_ttl)
        # Built from what the queue carries rather than read back: one Redis round trip less.
        record = JobRecord(
            id=job_id,
            name=job_type.name,
            max_attempts=job_type.max_attempts,
            attempts=attempt,
            created_at=created_at,
        )
        if attempt > job_type.max_attempts:
            # Only reachable when a worker died mid-attempt and arq delivered the job again.
            return await self._finish(
                record, ttl, error=f"gave up after {job_type.max_attempts} attempt(s)"
            )
        record.status = JobStatus.RUNNING
        record.started_at = utcnow()
        record.error = None
        await self._records.put(record, ttl)
        logger.info("job %s (%s) started, attempt %d", job_id, job_type.name, attempt)
        started = time.monotonic()
        context = JobContext(record, self._records, ttl, self._cpu_pool)
        try:
            typed_parameters = job_type.parameters.model_validate(parameters)
            async with asyncio.timeout(job_type.timeout):
                result = await self._implementations[job_type.name](typed_parameters, context)
        except Exception as error:  # the job boundary: any failure becomes a readable record
            return await self._failed(job_type, record, ttl, error, started)
        try:
            data = encode_result(job_type, result)
        except ValidationError as error:
            return await self._finish(
                record, ttl, error=f"result does not match {job_type.result.__name__}: {error}"
            )
        except (ValueError, TypeError) as error:
            return await self._finish(
                record, ttl, error=f"result could not be encoded as JSON: {error}"
            )
        logger.info(
            "job %s (%s) succeeded in %.3fs", job_id, job_type.name, time.monotonic() - started
        )
        return await self._finish(record, ttl, result=data)

    async def _failed(
        self,
        job_type: JobType,
        record: JobRecord,
        ttl: int,
        error: BaseException,
        started: float,
    ) -> Outcome:
        message = describe(error, job_type)
        retryable = isinstance(error, RetryableJobError | TimeoutError)
        if retryable and record.attempts < job_type.max_attempts:
            delay = retry_delay(job_type, record.attempts)
            logger.warning(
                "job %s (%s) attempt %d failed, retrying in %.2fs: %s",
                record.id, job_type.name, record.attempts, delay, message,
            )  # fmt: skip
            record.status = JobStatus.QUEUED
            record.error = message
            await self._records.put(record, ttl)
            return RetryLater(delay)
        logger.warning(
            "job %s (%s) failed after %.3fs: %s",
            record.id, job_type.name, time.monotonic() - started, message,
        )  # fmt: skip
        return await self._finish(record, ttl, error=message)

    async def _finish(
        self, record: JobRecord, ttl: int, *, result: Any = None, error: str | None = None
    ) -> Finished:
        record.status = JobStatus.FAILED if error is not None else JobStatus.SUCCEEDED
        record.result = result
        record.error = error
        record.finished_at = utcnow()
        await self._records.put(record, ttl)
        return Finished()
