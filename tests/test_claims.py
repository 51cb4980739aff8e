"""How a worker claims queued jobs (worker/arq_internals.py), on a real Redis: one script per read
of the queue, with the checks arq makes per job."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from arq import Retry
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import func

from shared.catalog import DEFAULT_QUEUE
from shared.keys import Keys, new_job_id
from tests.conftest import ended_in, eventually
from tests.deployments import ARQ_KEY_PREFIXES, REDIS_HOST, REDIS_PORT
from worker.arq_internals import ClaimingWorker, JobClaims, QueueWaitingRedis

LEASE_SECONDS = 5.0


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT)
    yield client
    await client.aclose()


@pytest.fixture
def queue(namespace: str) -> str:
    return Keys(namespace).queue(DEFAULT_QUEUE)


async def enqueue(client: redis.asyncio.Redis, queue: str, *, due_in_ms: int = 0) -> str:
    job_id = new_job_id()
    await client.zadd(queue, {job_id: timestamp_ms() + due_in_ms})
    return job_id


class QueueClaims:
    """One worker's claims on one queue."""

    def __init__(self, client: redis.asyncio.Redis, queue: str, holder: str) -> None:
        self._claims = JobClaims(client, holder, LEASE_SECONDS)
        self._queue = queue

    async def claim(self, job_ids: list[str], free: int) -> list[tuple[str, int]]:
        claimed = await self._claims.claim([(job_id, self._queue) for job_id in job_ids], free)
        assert {queue for _, _, queue in claimed} <= {self._queue}
        return [(job_id, score) for job_id, score, _ in claimed]


def claims_of(client: redis.asyncio.Redis, queue: str, holder: str) -> QueueClaims:
    return QueueClaims(client, queue, holder)


async def test_a_worker_claims_as_many_jobs_as_it_has_free_slots_in_queue_order(
    client: redis.asyncio.Redis, queue: str
) -> None:
    jobs = [await enqueue(client, queue) for _ in range(3)]
    first = claims_of(client, queue, "worker-a")
    second = claims_of(client, queue, "worker-b")

    claimed_first = await first.claim(jobs, free=2)
    claimed_second = await second.claim(jobs, free=5)

    assert [job_id for job_id, _ in claimed_first] == jobs[:2]
    assert [job_id for job_id, _ in claimed_second] == jobs[2:]
    holders = [await client.get(in_progress_key_prefix + job_id) for job_id in jobs]
    assert holders == [b"worker-a", b"worker-a", b"worker-b"]
    scores = {job_id: await client.zscore(queue, job_id) for job_id in jobs}
    assert all(score == scores[job_id] for job_id, score in claimed_first + claimed_second)
    await client.delete(queue, *(in_progress_key_prefix + job_id for job_id in jobs))


async def test_a_held_job_is_held_for_the_lease_and_no_other_worker_takes_it(
    client: redis.asyncio.Redis, queue: str
) -> None:
    job_id = await enqueue(client, queue)
    assert await claims_of(client, queue, "worker-a").claim([job_id], free=1) != []

    assert await claims_of(client, queue, "worker-b").claim([job_id], free=1) == []
    lease_left = await client.pttl(in_progress_key_prefix + job_id)
    assert 0 < lease_left <= LEASE_SECONDS * 1000
    await client.delete(queue, in_progress_key_prefix + job_id)


async def test_a_claim_repeated_by_the_same_worker_takes_the_job_again(
    client: redis.asyncio.Redis, queue: str
) -> None:
    """As when the reply to a claim was lost and the connection's retry sent it again."""
    job_id = await enqueue(client, queue)
    claims = claims_of(client, queue, "worker-a")
    first = await claims.claim([job_id], free=1)

    assert await claims.claim([job_id], free=1) == first
    await client.delete(queue, in_progress_key_prefix + job_id)


async def test_jobs_not_yet_due_or_no_longer_queued_are_not_claimed(
    client: redis.asyncio.Redis, queue: str
) -> None:
    deferred = await enqueue(client, queue, due_in_ms=60_000)  # a retry waiting out its delay
    finished = await enqueue(client, queue)
    await client.zrem(queue, finished)

    assert await claims_of(client, queue, "worker-a").claim([deferred, finished], free=2) == []
    assert await client.exists(*(in_progress_key_prefix + job for job in (deferred, finished))) == 0
    await client.delete(queue)


# arq's Worker.close() closes its pool with redis-py's deprecated close().
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_a_job_deferred_by_a_retry_runs_again_once_due(queue: str) -> None:
    """arq's Retry puts the job back with a later score; the claiming worker takes it again
    once that time has come, not before. Queue scores are wall-clock milliseconds, rounded to
    the nearest as arq does, and a job is due once the clock so rounded has reached its score:
    the retry is due at least 300 ms after the first try's millisecond, and the second try
    starts in its due millisecond or later."""
    tries: list[tuple[int, float, int]] = []

    async def flaky(ctx: dict[str, Any], message: str) -> str:
        tries.append((ctx["job_try"], time.time(), ctx["score"]))
        if len(tries) == 1:
            raise Retry(defer=0.3)
        return message

    pool = QueueWaitingRedis(
        queues=[queue], fallback_poll=0.1, host=REDIS_HOST, port=REDIS_PORT,
        default_queue_name=queue,
    )  # fmt: skip
    worker = ClaimingWorker(
        worker_id="worker-a", lease_seconds=LEASE_SECONDS, functions=[func(flaky, name="flaky")],
        redis_pool=pool, queue_name=queue, poll_delay=0.001, keep_result=0,
        handle_signals=False,
    )  # fmt: skip
    job = await pool.enqueue_job("flaky", "hi", _queue_name=queue)
    assert job is not None
    running = asyncio.create_task(worker.async_run())
    try:

        async def ran_twice() -> bool:
            return len(tries) == 2 and await ended_in(worker, job.job_id)

        await eventually(ran_twice)
        assert await pool.zscore(queue, job.job_id) is None, "the job left the queue as it ended"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    (first_try, first_at, _), (second_try, second_at, due) = tries
    assert (first_try, second_try) == (1, 2)
    assert due >= round(first_at * 1000) + 300, "the retry was put 0.3 s after the first try"
    assert round(second_at * 1000) >= due, f"started at {second_at * 1000:.3f} ms, due at {due}"


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_a_job_named_twice_in_one_read_starts_once(queue: str) -> None:
    """A read and a wake-up (or one wake-up heard twice, as while subscriptions move to a new
    master) can name a job twice; the claim takes a job its own worker holds again, so the
    worker must still start it once."""
    runs: list[str] = []

    async def note(ctx: dict[str, Any], message: str) -> None:
        runs.append(message)
        await asyncio.sleep(0.05)

    pool = QueueWaitingRedis(
        queues=[queue], fallback_poll=0.1, host=REDIS_HOST, port=REDIS_PORT,
        default_queue_name=queue,
    )  # fmt: skip
    worker = ClaimingWorker(
        worker_id="worker-a", lease_seconds=LEASE_SECONDS, functions=[func(note, name="note")],
        redis_pool=pool, queue_name=queue, poll_delay=0.001, keep_result=0,
        handle_signals=False,
    )  # fmt: skip
    job = await pool.enqueue_job("note", "once", _queue_name=queue)
    assert job is not None
    try:
        await worker.start_jobs([job.job_id.encode(), job.job_id.encode()])
        await asyncio.gather(*worker.tasks.values())
        assert runs == ["once"]
        assert await pool.zscore(queue, job.job_id) is None
    finally:
        await worker.close()


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_jobs_left_for_want_of_a_slot_are_read_again_without_a_wake_up(
    client: redis.asyncio.Redis, queue: str, namespace: str
) -> None:
    """A batch's jobs share one wake-up. A worker with no slot free for some of them must hand
    them on within moments once a slot frees, even if its read finds the queue as the last one
    did (a job's slot frees a moment after its end took it off the queue), instead of waiting
    out WORKER_FALLBACK_POLL for a wake-up that is not coming."""
    release = asyncio.Event()

    async def hold(ctx: dict[str, Any], message: str) -> None:
        await release.wait()

    pool = QueueWaitingRedis(
        queues=[queue], fallback_poll=30, host=REDIS_HOST, port=REDIS_PORT,
        default_queue_name=queue,
    )  # fmt: skip
    await pool.listen_for_wakeups({queue: Keys(namespace).wakeup_channel(DEFAULT_QUEUE)})
    worker = ClaimingWorker(
        worker_id="worker-a", lease_seconds=LEASE_SECONDS, functions=[func(hold, name="hold")],
        redis_pool=pool, queue_name=queue, poll_delay=0.001, keep_result=0, max_jobs=1,
        handle_signals=False,
    )  # fmt: skip
    jobs = [await pool.enqueue_job("hold", str(number), _queue_name=queue) for number in range(3)]

    async def read() -> list[bytes]:
        found: list[bytes] = await pool.zrangebyscore(
            queue, min=float("-inf"), max=timestamp_ms(), start=0, num=500
        )
        return found

    try:
        first = await read()
        assert len(first) == 3
        await worker.start_jobs(first)
        assert worker.job_counter == 1, "one slot: two due jobs are left"
        assert await asyncio.wait_for(read(), 5) == first
    finally:
        release.set()
        await asyncio.gather(*worker.tasks.values())
        await pool.stop_listening()
        await worker.close()
        job_keys = [prefix + job.job_id for job in jobs if job for prefix in ARQ_KEY_PREFIXES]
        await client.delete(queue, *job_keys)
