"""A worker rides out Redis going away: its clients wait until Redis answers again, a record
write that waits longer than the job's timeout still lands, and an attempt whose outcome could
not be written runs again instead of vanishing from the queue."""

import asyncio
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio
from arq.constants import in_progress_key_prefix

from shared.builtin_jobs import echo as ECHO
from shared.cache import memory_cache
from shared.catalog import DEFAULT_QUEUE, JobType
from shared.events import MemoryJobEvents
from shared.keys import new_job_id
from shared.outages import ride_out_outages
from shared.queue import QueuedJob
from shared.records import JobRecord, JobStatus, RecordStore
from tests.conftest import eventually, settings_for_test
from tests.processes import redis_server
from worker.arq_internals import ClaimingWorker, QueueWaitingRedis
from worker.main import arq_function
from worker.runner import JobRunner


async def test_a_worker_client_waits_out_a_redis_that_resets_it_mid_handshake() -> None:
    """A Redis that is shutting down completes TCP connects in its backlog and then resets
    them unanswered; the command waits for the Redis that comes back on the same port."""
    with redis_server() as server:
        server.stop()
        loop = asyncio.get_running_loop()
        with socket.create_server((server.host, server.port)) as dying:
            dying.setblocking(False)
            client = redis.asyncio.Redis(host=server.host, port=server.port)
            ride_out_outages(client.connection_pool)
            write = asyncio.create_task(client.set("key", "value"))
            connection, _ = await loop.sock_accept(dying)
            with connection:
                assert await loop.sock_recv(connection, 1024), "the client began its handshake"
                # Reset, not closed: SO_LINGER with a zero timeout.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await asyncio.sleep(0.2)
        assert not write.done(), f"the command gave up while Redis was away: {write}"
        server.start()
        try:
            assert await asyncio.wait_for(write, 10) is True
            assert server.client().get("key") == "value"
        finally:
            await client.aclose()


OUTAGE_SECONDS = 6.0
"""Far longer than the timeout of the job type below."""

QUICK = replace(ECHO, name="quick", timeout=0.3)


class LosesOneFinalWrite(RecordStore):
    """A record store whose first write of a finished record fails, as a write can when Redis
    goes away in a way no retry covers."""

    lost = False

    async def _store(
        self, record: JobRecord, text: str, ttl: int, *, announce: bool, replace_only: bool = False
    ) -> None:
        if record.status.finished and not self.lost:
            self.lost = True
            raise redis.ConnectionError("Error while reading: Connection reset by peer")
        await super()._store(record, text, ttl, announce=announce, replace_only=replace_only)


class WaitsOutAnOutage(RecordStore):
    """A record store whose first write of a finished record lands only after OUTAGE_SECONDS,
    as the worker's retried write does while Redis restarts."""

    waited = False

    async def _store(
        self, record: JobRecord, text: str, ttl: int, *, announce: bool, replace_only: bool = False
    ) -> None:
        if record.status.finished and not self.waited:
            self.waited = True
            await asyncio.sleep(OUTAGE_SECONDS)
        await super()._store(record, text, ttl, announce=announce, replace_only=replace_only)


async def run_one_job(
    pool: QueueWaitingRedis, records: RecordStore, job_type: JobType, within: float = 10.0
) -> JobRecord:
    """Enqueue one job as the api does, run the worker until the job's record says it ended
    and arq has taken it off the queue; its final record."""
    with ThreadPoolExecutor(1) as cpu_pool:
        runner = JobRunner(records, cpu_pool)
        worker = ClaimingWorker(
            worker_id="worker-a", lease_seconds=5, functions=[arq_function(job_type)],
            redis_pool=pool, queue_name=pool.default_queue_name, poll_delay=0.001,
            keep_result=0, handle_signals=False,
            ctx={"runner": runner},
        )  # fmt: skip
        submitted = JobRecord(id=new_job_id(), name=job_type.name)
        job_id = submitted.id
        await records.put(submitted, 60, announce=False)
        job = QueuedJob.of(submitted, {"message": "kept"}, DEFAULT_QUEUE)
        await pool.enqueue_job(job_type.name, job.model_dump(mode="json"), _job_id=job_id)
        running = asyncio.create_task(worker.async_run())
        try:

            async def ended() -> JobRecord | None:
                record = await records.get(job_id)
                return record if record is not None and record.status.finished else None

            async def left_the_queue() -> bool:
                queued = await pool.zscore(pool.default_queue_name, job_id)
                held = await pool.exists(in_progress_key_prefix + job_id)
                return queued is None and not held

            record: JobRecord = await eventually(ended, within)
            await eventually(left_the_queue)
            return record
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await worker.close()


def cache_of(namespace: str) -> Any:
    return memory_cache(settings_for_test(cache_backend="local", cache_namespace=namespace))


# arq's Worker.close() closes its pool with redis-py's deprecated close().
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_an_attempt_whose_outcome_could_not_be_written_runs_again(
    namespace: str, pool: QueueWaitingRedis
) -> None:
    records = LosesOneFinalWrite(cache_of(namespace), 60, MemoryJobEvents())
    record = await run_one_job(pool, records, ECHO)
    assert records.lost, "the first attempt's final write was the one lost"
    assert (record.status, record.result, record.attempts) == (
        JobStatus.SUCCEEDED,
        {"message": "kept"},
        2,
    )


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_a_final_write_that_waits_out_a_long_outage_still_ends_the_job(
    namespace: str, pool: QueueWaitingRedis
) -> None:
    """arq's own timeout must not cut off a record write that outlasts the job's timeout."""
    records = WaitsOutAnOutage(cache_of(namespace), 60, MemoryJobEvents())
    record = await run_one_job(pool, records, QUICK, within=OUTAGE_SECONDS + 10)
    assert records.waited
    assert (record.status, record.result, record.attempts) == (
        JobStatus.SUCCEEDED,
        {"message": "kept"},
        1,
    )
