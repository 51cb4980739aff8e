"""The outbox of callbacks, on both backends: a callback waits until its job's end is written
and no attempt holds the job, then one deliverer at a time holds it for a lease, and only that
claim may reschedule or settle it."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio

from shared.callbacks import CallbackOutbox, ClaimedCallback, MemoryCallbackOutbox
from shared.callbacks.redis import RedisCallbackOutbox
from shared.keys import Keys, in_progress_key, new_job_id
from tests.conftest import eventually
from tests.deployments import QUEUE_DB, REDIS_HOST, REDIS_PORT

URL = "https://hooks.example.com/done"
LEASE = 30.0


@pytest.fixture
async def queue_client(namespace: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=QUEUE_DB)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def outbox(
    request: pytest.FixtureRequest, namespace: str, queue_client: redis.asyncio.Redis
) -> AsyncIterator[CallbackOutbox]:
    made: CallbackOutbox = (
        MemoryCallbackOutbox()
        if request.param == "memory"
        else RedisCallbackOutbox(queue_client, Keys(namespace))
    )
    yield made
    await made.close()


async def claimed_ids(outbox: CallbackOutbox, lease: float = LEASE) -> list[str]:
    return [claimed.job_id for claimed in (await outbox.claim(16, lease)).callbacks]


async def test_a_callback_waits_until_its_jobs_end_is_written(outbox: CallbackOutbox) -> None:
    job_id = new_job_id()
    await outbox.schedule(job_id, URL)
    assert await claimed_ids(outbox) == [], "not before its writer says it is done"
    outbox.release(job_id)  # a worker's attempt let go of the job
    [claimed] = (await outbox.claim(16, LEASE)).callbacks
    assert (claimed.job_id, claimed.url, claimed.attempts, claimed.first_attempt_at) == (
        job_id, URL, 0, None,
    )  # fmt: skip
    assert await claimed_ids(outbox) == [], "held by its claim"


async def test_the_apis_ready_reaches_a_watching_deliverer(outbox: CallbackOutbox) -> None:
    woken = asyncio.Event()
    await outbox.watch(woken.set)
    job_id = new_job_id()
    await outbox.schedule(job_id, URL)
    await outbox.ready(job_id)  # the api wrote a cancel
    await asyncio.wait_for(woken.wait(), 5)
    assert await eventually(lambda: claimed_ids(outbox)) == [job_id]


async def test_a_callback_whose_writer_died_is_claimed_after_a_recheck(
    outbox: CallbackOutbox,
) -> None:
    job_id = new_job_id()
    await outbox.schedule(job_id, URL)
    claims = await outbox.claim(16, LEASE)
    assert claims.callbacks == [] and claims.next_due is not None
    assert 0.5 < claims.next_due - time.time() <= 1.0
    assert await eventually(lambda: claimed_ids(outbox), within=3) == [job_id]


async def test_only_the_holder_of_a_claim_reschedules_or_settles_it(
    outbox: CallbackOutbox,
) -> None:
    job_id = new_job_id()
    await outbox.schedule(job_id, URL)
    outbox.release(job_id)
    [stale] = (await outbox.claim(16, 0.2)).callbacks
    # Its deliverer stalled past the lease: another takes the callback over.
    [current] = await eventually(lambda: claimed(outbox))
    assert current.job_id == job_id and current.token != stale.token
    await outbox.settle(stale)
    await outbox.reschedule(replace(stale, attempts=5), 0, waiting=False)
    assert await claimed_ids(outbox) == [], "the stale claim changed nothing"

    first = time.time()
    await outbox.reschedule(replace(current, attempts=1, first_attempt_at=first), 0, waiting=False)
    [again] = (await outbox.claim(16, LEASE)).callbacks
    assert (again.attempts, again.first_attempt_at) == (1, pytest.approx(first, abs=0.01))
    await outbox.settle(again)
    assert (await outbox.claim(16, LEASE)).next_due is None, "gone"


async def test_a_second_schedule_keeps_the_first(outbox: CallbackOutbox) -> None:
    job_id = new_job_id()
    await outbox.schedule(job_id, URL)
    outbox.release(job_id)
    [first] = (await outbox.claim(16, LEASE)).callbacks
    await outbox.reschedule(
        replace(first, attempts=2, first_attempt_at=time.time()), 0, waiting=False
    )
    await outbox.schedule(job_id, "https://hooks.example.com/other")
    [kept] = (await outbox.claim(16, LEASE)).callbacks
    assert (kept.url, kept.attempts) == (URL, 2)


async def test_a_callback_waits_while_an_attempt_holds_its_job(
    outbox: CallbackOutbox, namespace: str, queue_client: redis.asyncio.Redis
) -> None:
    """The api cancelled the job while an attempt ran it: its callback waits for the attempt
    to let go (memory: the embedded worker's hold; Redis: arq's in-progress key, whichever
    worker holds it)."""
    job_id = new_job_id()
    outbox.hold(job_id)
    await queue_client.set(in_progress_key(job_id), "a-worker", px=60_000)
    try:
        await outbox.schedule(job_id, URL)
        await outbox.ready(job_id)
        if isinstance(outbox, RedisCallbackOutbox):
            outbox.release(job_id)  # as the api's announcement does in a deliverer's process
        claims = await outbox.claim(16, LEASE)
        assert claims.callbacks == [] and claims.next_due is not None
        await eventually(lambda: past(claims.next_due or 0), within=3)
        assert await claimed_ids(outbox) == [], "due again, and still held"
    finally:
        await queue_client.delete(in_progress_key(job_id))
    outbox.release(job_id)
    assert await claimed_ids(outbox) == [job_id]


async def claimed(outbox: CallbackOutbox) -> list[ClaimedCallback]:
    return (await outbox.claim(16, LEASE)).callbacks


async def past(moment: float) -> bool:
    return time.time() > moment
