"""How a worker claims queued jobs (worker/claims.py), on a real Redis: one script per turn reads
the due jobs and claims them, with the checks arq makes per job."""

import asyncio
import secrets
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
from shared.keys import Keys, arq_job_key, new_job_id
from tests.conftest import ended_in, eventually
from tests.deployments import ARQ_KEY_PREFIXES, REDIS_HOST, REDIS_PORT
from worker.arq_internals import ClaimingWorker, QueueWaitingRedis
from worker.claims import JobClaims

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


def claims_of(client: redis.asyncio.Redis, holder: str) -> JobClaims:
    return JobClaims(client, holder, LEASE_SECONDS)


async def test_a_worker_claims_as_many_jobs_as_it_has_free_slots_in_queue_order(
    client: redis.asyncio.Redis, queue: str
) -> None:
    queued = [await enqueue(client, queue) for _ in range(3)]
    due = {job_id: await client.zscore(queue, job_id) for job_id in queued}
    jobs = sorted(queued, key=lambda job_id: (due[job_id], job_id))  # the queue's order

    first = await claims_of(client, "worker-a").claim([queue], free=2)
    second = await claims_of(client, "worker-b").claim([queue], free=5)

    assert [claimed.job_id for claimed in first.jobs] == jobs[:2]
    assert first.left == 1, "one due job was left for want of a slot"
    assert [claimed.job_id for claimed in second.jobs] == jobs[2:]
    assert (second.left, second.held) == (0, 0), "the running jobs are not read again"
    holders = [await client.get(in_progress_key_prefix + job_id) for job_id in jobs]
    assert holders == [b"worker-a", b"worker-a", b"worker-b"]
    for claimed in first.jobs + second.jobs:
        assert (claimed.queue, claimed.score, claimed.job_try) == (queue, due[claimed.job_id], 1)
    await client.delete(queue, *(prefix + job_id for job_id in jobs for prefix in ARQ_KEY_PREFIXES))


async def test_a_held_job_is_held_for_the_lease_and_no_other_worker_takes_it(
    client: redis.asyncio.Redis, queue: str
) -> None:
    job_id = await enqueue(client, queue)
    assert len((await claims_of(client, "worker-a").claim([queue], free=1)).jobs) == 1

    assert (await claims_of(client, "worker-b").claim([queue], free=1)).jobs == []
    lease_left = await client.pttl(in_progress_key_prefix + job_id)
    assert 0 < lease_left <= LEASE_SECONDS * 1000
    score = await client.zscore(queue, job_id)
    assert score is not None
    assert timestamp_ms() < score <= timestamp_ms() + LEASE_SECONDS * 1000, "due at the lease's end"
    await client.delete(queue, *(prefix + job_id for prefix in ARQ_KEY_PREFIXES))


async def test_a_job_whose_worker_died_is_claimed_again_once_its_lease_ran_out(
    client: redis.asyncio.Redis, queue: str
) -> None:
    job_id = await enqueue(client, queue)
    dying = JobClaims(client, "worker-a", lease_seconds=0.3)
    assert [claimed.job_id for claimed in (await dying.claim([queue], free=1)).jobs] == [job_id]
    other = claims_of(client, "worker-b")
    assert (await other.claim([queue], free=1)).jobs == []

    async def taken() -> Any:
        return (await other.claim([queue], free=1)).jobs

    [claimed] = await eventually(taken, within=5.0)
    assert (claimed.job_id, claimed.job_try) == (job_id, 2), "its second delivery"
    assert await client.get(in_progress_key_prefix + job_id) == b"worker-b"
    await client.delete(queue, *(prefix + job_id for prefix in ARQ_KEY_PREFIXES))


async def test_a_claim_sent_again_answers_what_it_took(
    client: redis.asyncio.Redis, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when the reply to a claim was lost and the connection's retry sent it again: the
    jobs the first one took are not due any more, and must not be left held by nobody."""
    jobs = [await enqueue(client, queue) for _ in range(2)]
    await client.set(arq_job_key(jobs[0]), b"envelope")
    monkeypatch.setattr(secrets, "token_hex", lambda size: "the-same-claim")
    claims = claims_of(client, "worker-a")
    first = await claims.claim([queue], free=2)

    assert (await claims.claim([queue], free=2)).jobs == first.jobs
    envelopes = {claimed.job_id: claimed.envelope for claimed in first.jobs}
    assert envelopes == {jobs[0]: b"envelope", jobs[1]: None}, "None: the job is gone"
    assert [claimed.job_try for claimed in first.jobs] == [1, 1], "delivered once"
    monkeypatch.undo()
    assert (await claims.claim([queue], free=2)).jobs == [], "a new claim takes nothing"
    await client.delete(queue, *(prefix + job_id for job_id in jobs for prefix in ARQ_KEY_PREFIXES))


async def test_jobs_not_yet_due_or_no_longer_queued_are_not_claimed(
    client: redis.asyncio.Redis, queue: str
) -> None:
    deferred = await enqueue(client, queue, due_in_ms=60_000)  # a retry waiting out its delay
    finished = await enqueue(client, queue)
    await client.zrem(queue, finished)

    claim = await claims_of(client, "worker-a").claim([queue], free=2)
    assert (claim.jobs, claim.found) == ([], [0])
    assert await client.exists(*(in_progress_key_prefix + job for job in (deferred, finished))) == 0
    await client.delete(queue)


async def test_one_claim_takes_one_job_of_each_queue_in_turn(
    client: redis.asyncio.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    busy, quiet = keys.queue("busy"), keys.queue("quiet")
    # Due a millisecond apart, in the order queued (past, so due now).
    busy_jobs = [await enqueue(client, busy, due_in_ms=number - 10) for number in range(5)]
    quiet_job = await enqueue(client, quiet, due_in_ms=-10)

    claim = await claims_of(client, "worker-a").claim([busy, quiet], free=3)

    assert [(claimed.job_id, claimed.queue) for claimed in claim.jobs] == [
        (busy_jobs[0], busy),
        (quiet_job, quiet),
        (busy_jobs[1], busy),
    ]
    assert (claim.found, claim.left) == ([4, 1], 2), "each queue read up to a job past the slots"
    job_ids = [*busy_jobs, quiet_job]
    await client.delete(
        busy, quiet, *(prefix + job_id for job_id in job_ids for prefix in ARQ_KEY_PREFIXES)
    )


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
async def test_jobs_left_for_want_of_a_slot_are_read_again_without_a_wake_up(
    client: redis.asyncio.Redis, queue: str, namespace: str
) -> None:
    """A batch's jobs share one wake-up. A worker with no slot free for some of them must hand
    them on within moments once a slot frees, even if its read finds the queue as the last one
    did (a job's slot frees a moment after its end took it off the queue), instead of waiting
    out WORKER_FALLBACK_POLL for a wake-up that is not coming."""
    permits = asyncio.Semaphore(0)
    """Each release lets one job end."""

    async def hold(ctx: dict[str, Any], message: str) -> None:
        await permits.acquire()

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
    # Queued without a wake-up, as the worker would miss one while busy.
    jobs = [await pool.enqueue_job("hold", str(number), _queue_name=queue) for number in range(3)]
    running = asyncio.create_task(worker.async_run())
    try:

        async def started(count: int) -> bool:
            return worker.jobs_complete + worker.job_counter >= count

        await eventually(lambda: started(1), within=5.0)
        assert worker.job_counter == 1, "one slot: two due jobs are left"
        for count in (2, 3):
            permits.release()
            # Well within the 30 s fallback poll: the slot's end has the worker claim again.
            await eventually(lambda count=count: started(count), within=5.0)  # type: ignore[misc]
        permits.release()

        async def drained() -> bool:
            return int(await pool.zcard(queue)) == 0

        await eventually(drained, within=5.0)
    finally:
        for _ in jobs:
            permits.release()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await pool.stop_listening()
        await worker.close()
        job_keys = [prefix + job.job_id for job in jobs if job for prefix in ARQ_KEY_PREFIXES]
        await client.delete(queue, *job_keys)
