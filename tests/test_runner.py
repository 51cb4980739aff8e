"""The job runner: retries with backoff, timeouts and unencodable results, as records show them.

These use job types declared here (not in the catalog) and the embedded worker over the memory
cache, which runs jobs through the same runner as the arq worker.
"""

import asyncio
import gc
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.builtin_jobs import EchoParameters, EchoResult
from shared.builtin_jobs import echo as ECHO
from shared.cache import memory_cache
from shared.catalog import DEFAULT_QUEUE, JobResult, JobType
from shared.errors import RetryableJobError
from shared.events import MemoryJobEvents
from shared.jobs import JobContext
from shared.keys import new_job_id
from shared.queue import QueuedJob
from shared.queue.memory import MemoryQueue
from shared.records import JobRecord, RecordStore
from tests.conftest import eventually, settings_for_test
from worker.attempt_records import AttemptRecords
from worker.embedded import EmbeddedWorker
from worker.runner import REDELIVERIES, Finished, JobRunner


class Blob(JobResult):
    data: Any


calls: dict[str, int] = {}


async def flaky(parameters: EchoParameters, context: JobContext) -> EchoResult:
    calls[context.job_id] = calls.get(context.job_id, 0) + 1
    if calls[context.job_id] < 3:
        raise RetryableJobError(f"upstream busy (call {calls[context.job_id]})")
    return EchoResult(message=parameters.message)


async def hopeless(parameters: EchoParameters, context: JobContext) -> EchoResult:
    raise RetryableJobError(f"still down on attempt {context.attempt}")


async def slow(parameters: EchoParameters, context: JobContext) -> EchoResult:
    await asyncio.sleep(30)
    return EchoResult(message="never")


async def not_json(parameters: EchoParameters, context: JobContext) -> Blob:
    return Blob(data=object())


async def wrong_shape(parameters: EchoParameters, context: JobContext) -> Any:
    return {"message": ["not", "a", "string"]}


FLAKY = JobType(
    "flaky", "fails twice", EchoParameters, EchoResult, retries=2, retry_delay=0.01,
    implementation=flaky,
)  # fmt: skip
HOPELESS = JobType(
    "hopeless", "always", EchoParameters, EchoResult, retries=1, retry_delay=0.01,
    implementation=hopeless,
)  # fmt: skip
SLOW = JobType("slow", "too slow", EchoParameters, EchoResult, timeout=0.2, implementation=slow)
NOT_JSON = JobType("not_json", "bad result", EchoParameters, Blob, implementation=not_json)
WRONG_SHAPE = JobType(
    "wrong_shape", "bad result", EchoParameters, EchoResult, implementation=wrong_shape
)


@pytest.fixture
async def records(namespace: str) -> AsyncIterator[RecordStore]:
    cache = memory_cache(settings_for_test(cache_namespace=namespace))
    yield RecordStore(cache, default_ttl=60, events=MemoryJobEvents())
    await cache.close()


JOB_TYPES = {job_type.name: job_type for job_type in (FLAKY, HOPELESS, SLOW, NOT_JSON, WRONG_SHAPE)}


@pytest.fixture
async def queue(records: RecordStore) -> AsyncIterator[MemoryQueue]:
    """The local mode's queue, whose jobs an embedded worker runs."""
    queue = MemoryQueue()
    with ThreadPoolExecutor(1) as pool:
        runner = JobRunner(records, pool)
        await queue.listen_for_cancels(runner.cancel)
        embedded = EmbeddedWorker(queue, runner, concurrency=2, job_types=JOB_TYPES)
        embedded.start()
        yield queue
        await embedded.close()
        await queue.close()


def queued(record: JobRecord, message: str) -> QueuedJob:
    return QueuedJob.of(record, {"message": message}, DEFAULT_QUEUE)


async def run_to_the_end(queue: MemoryQueue, records: RecordStore, job_type: JobType) -> JobRecord:
    record = JobRecord(id=new_job_id(), name=job_type.name)
    await records.put(record, 60)
    await queue.enqueue(queued(record, "hi"))
    job_id = record.id

    async def finished() -> JobRecord | None:
        record = await records.get(job_id)
        return record if record and record.status.finished else None

    result: JobRecord = await eventually(finished)
    return result


async def test_retryable_error_is_retried_until_it_succeeds(
    queue: MemoryQueue, records: RecordStore
) -> None:
    record = await run_to_the_end(queue, records, FLAKY)
    assert record.status == "succeeded"
    assert record.attempts == 3
    assert record.result == {"message": "hi"}
    assert record.error is None


async def test_exhausted_retries_end_failed_with_the_last_error(
    queue: MemoryQueue, records: RecordStore
) -> None:
    record = await run_to_the_end(queue, records, HOPELESS)
    assert record.status == "failed"
    assert record.attempts == 2
    assert record.error == "still down on attempt 2"


async def test_job_over_its_timeout_fails_with_a_timeout_error(
    queue: MemoryQueue, records: RecordStore
) -> None:
    record = await run_to_the_end(queue, records, SLOW)
    assert record.status == "failed"
    assert record.error == "timed out after 0.2s"


async def test_result_that_is_not_json_fails_with_a_readable_reason(
    queue: MemoryQueue, records: RecordStore
) -> None:
    record = await run_to_the_end(queue, records, NOT_JSON)
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.startswith("result could not be encoded as JSON")


async def test_result_of_the_wrong_shape_fails_naming_the_result_model(
    queue: MemoryQueue, records: RecordStore
) -> None:
    record = await run_to_the_end(queue, records, WRONG_SHAPE)
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.startswith("result does not match EchoResult")


async def test_delivery_past_the_last_attempt_writes_a_failed_record(
    records: RecordStore,
) -> None:
    """What happens when a worker died mid-attempt and arq delivers the job once more."""
    submitted = JobRecord(id=new_job_id(), name="hopeless")
    job_id = submitted.id
    await records.put(submitted, 60)
    with ThreadPoolExecutor(1) as pool:
        runner = JobRunner(records, pool)
        outcome = await runner.run(
            HOPELESS,
            QueuedJob.of(submitted, {"message": "hi"}, DEFAULT_QUEUE),
            attempt=HOPELESS.max_attempts + REDELIVERIES + 1,
        )
    assert outcome == Finished()
    record = await records.get(job_id)
    assert record is not None
    assert record.status == "failed"
    assert record.error == (
        "gave up after 5 attempts: each ended without an outcome "
        "(its worker stopped, or could not record it)"
    )


async def test_runner_holds_nothing_of_a_job_once_it_has_ended(records: RecordStore) -> None:
    """A worker runs jobs for weeks: what it kept per job would grow without bound."""
    with ThreadPoolExecutor(1) as pool:
        runner = JobRunner(records, pool)
        for number in range(3):
            job = QueuedJob.of(
                JobRecord(id=new_job_id(), name="echo"), {"message": f"hi {number}"}, DEFAULT_QUEUE
            )
            outcome = await runner.run(ECHO, job, attempt=1)
            assert outcome == Finished()
        gc.collect()
        assert [kept for kept in gc.get_objects() if isinstance(kept, AttemptRecords)] == []
