"""The dashboard's history (shared/history/) on each backend: it holds what every worker adds,
by queue and job type, for an hour and no longer; one worker samples each interval's waiting
jobs however many try; and jobs that end cost no Redis command, their beat one round trip."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.crc import key_slot

from shared.activity import WorkerActivity
from shared.history import INTERVAL_SECONDS, KEPT_INTERVALS, History, Tally, interval_of
from shared.history.base import Figure, WaitingReader
from shared.history.memory import MemoryHistory
from shared.history.recorder import HistoryRecorder
from shared.history.redis import RedisHistory
from shared.keys import Keys, new_job_id
from shared.overview.base import waiting_by_queue
from shared.overview.redis import RedisOverview
from shared.records import JobRecord, JobStatus, utcnow
from tests.deployments import QUEUE_DB, REDIS_HOST, REDIS_PORT, delete_namespace
from tests.round_trips import round_trips
from worker.monitoring import Heartbeat


@pytest.fixture
async def queue_redis() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=QUEUE_DB)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def history(
    request: pytest.FixtureRequest, namespace: str, queue_redis: redis.asyncio.Redis
) -> AsyncIterator[History]:
    """Each backend of the history; the Redis one under the test's namespace, deleted after."""
    if request.param == "memory":
        yield MemoryHistory()
        return
    yield RedisHistory(queue_redis, Keys(namespace))
    delete_namespace(namespace)


def ended(activity: WorkerActivity, name: str, queue: str, status: JobStatus) -> None:
    """One job of type `name` ran on `queue` in this worker and ended with `status`."""
    record = JobRecord(id=new_job_id(), name=name, attempts=1, started_at=utcnow())
    activity.started(record, queue)
    record.status = status
    record.finished_at = utcnow()
    activity.finished(record)


async def test_the_history_holds_what_every_worker_adds_by_queue_and_type(
    history: History,
) -> None:
    now = time.time()
    first, second = WorkerActivity(), WorkerActivity()
    for _ in range(3):
        ended(first, "echo", "default", JobStatus.SUCCEEDED)
    ended(first, "fail", "default", JobStatus.FAILED)
    ended(second, "primes", "cpu", JobStatus.SUCCEEDED)
    ended(second, "echo", "default", JobStatus.CANCELLED)
    await history.add(first.tally.take())
    await history.add(second.tally.take())
    assert first.tally.take() == {}, "a take starts the tally afresh"

    [interval] = await history.read(interval_of(now) - 1, interval_of(time.time()))
    assert interval.counts == {
        Figure("default", "echo"): 4,
        Figure("default", "fail"): 1,
        Figure("default", "fail", failed=True): 1,
        Figure("cpu", "primes"): 1,
    }
    assert interval.waiting is None, "nobody sampled it"
    later = interval_of(time.time()) + 1
    assert await history.read(later, later + 5) == []


async def test_the_history_keeps_an_hour_and_forgets_what_is_older(history: History) -> None:
    now = interval_of(time.time())
    hour_ago = now - KEPT_INTERVALS + 1
    past_the_hour = now - KEPT_INTERVALS
    tally = Tally()
    for interval in (past_the_hour, hour_ago, now):
        tally.count("default", "echo", failed=False, at=interval * INTERVAL_SECONDS + 1)
    await history.add(tally.take())

    kept = await history.read(past_the_hour - 10, now)
    assert [interval.interval for interval in kept] == [hour_ago, now]
    assert [interval.interval for interval in await history.read(now, now)] == [now]


async def test_one_worker_samples_each_interval_however_many_try(history: History) -> None:
    interval = interval_of(time.time())
    reads: list[str] = []

    def reader(sampler: str, waiting: dict[str, int]) -> WaitingReader:
        async def read() -> dict[str, int]:
            reads.append(sampler)
            await asyncio.sleep(0.05)  # another worker tries meanwhile
            return waiting

        return read

    claimed = await asyncio.gather(
        history.sample_waiting(interval, "worker-a", reader("worker-a", {"default": 7, "cpu": 0})),
        history.sample_waiting(interval, "worker-b", reader("worker-b", {"default": 9, "cpu": 1})),
    )
    assert sorted(claimed) == [False, True]
    assert len(reads) == 1, "only the worker that claimed the interval read the queues"
    [sampled] = await history.read(interval, interval)
    assert sampled.waiting == ({"default": 7, "cpu": 0} if claimed[0] else {"default": 9, "cpu": 1})
    assert not await history.sample_waiting(interval, "worker-c", reader("worker-c", {}))


async def test_the_history_keys_share_a_hash_tag_and_expire_just_after_the_hour(
    namespace: str, queue_redis: redis.asyncio.Redis
) -> None:
    history = RedisHistory(queue_redis, Keys(namespace))
    now = interval_of(time.time())
    tally = Tally()
    for interval in (now - 30, now - 7, now):  # three different minutes
        tally.count("default", "echo", failed=True, at=interval * INTERVAL_SECONDS)
    try:
        await history.add(tally.take())
        keys = [key async for key in queue_redis.scan_iter(f"{namespace}:*")]
        assert len(keys) == 3
        assert all(key.decode().startswith(f"{namespace}:{{history}}:") for key in keys)
        assert len({key_slot(key) for key in keys}) == 1, "one slot: one node reads the hour"
        for key in keys:
            assert 3600 < await queue_redis.ttl(key) <= 3600 + 120
    finally:
        delete_namespace(namespace)


async def test_jobs_that_end_cost_no_redis_command_and_a_beat_adds_them_in_one_round_trip(
    namespace: str, queue_redis: redis.asyncio.Redis
) -> None:
    keys = Keys(namespace)
    history = RedisHistory(queue_redis, keys)
    overview = RedisOverview(queue_redis, keys)
    activity = WorkerActivity()

    async def waiting() -> dict[str, int]:
        return await waiting_by_queue(overview, ["default", "cpu"])

    recorder = HistoryRecorder(history, activity.tally, activity.worker_id, waiting)
    try:
        began = interval_of(time.time())
        assert await recorder.flush(5.0)  # this interval's sample: taken now, once
        with round_trips() as sent:
            for number in range(200):
                status = JobStatus.FAILED if number % 10 == 0 else JobStatus.SUCCEEDED
                ended(activity, "echo", "default", status)
            await asyncio.sleep(0)
            assert sent == [], "ending a job sends nothing to Redis"
            assert await recorder.flush(5.0)
        if interval_of(time.time()) == began:
            assert len(sent) == 1, "the heartbeat adds 200 jobs in one round trip"
        else:  # a new interval began: its sample (claim, workers, depths, write) came too
            assert len(sent) <= 5
        figures = await history.read(interval_of(time.time()) - 2, interval_of(time.time()))
        assert sum(interval.counts.get(Figure("default", "echo"), 0) for interval in figures) == 200
        assert (
            sum(
                interval.counts.get(Figure("default", "echo", failed=True), 0)
                for interval in figures
            )
            == 20
        )
        assert any(interval.waiting == {"default": 0, "cpu": 0} for interval in figures)
    finally:
        delete_namespace(namespace)


async def test_counts_that_cannot_be_written_go_with_the_next_flush(
    namespace: str,
) -> None:
    keys = Keys(namespace)
    down = redis.asyncio.Redis(host=REDIS_HOST, port=1, db=QUEUE_DB, socket_connect_timeout=0.5)
    history = MemoryHistory()
    failing = RedisHistory(down, keys)
    tally = Tally()

    async def waiting() -> dict[str, int]:
        return {}

    tally.count("default", "echo", failed=False)
    assert not await HistoryRecorder(failing, tally, "worker", waiting).flush(2.0)
    await down.aclose()
    assert await HistoryRecorder(history, tally, "worker", waiting).flush(2.0)
    [interval] = await history.read(interval_of(time.time()) - 1, interval_of(time.time()))
    assert interval.counts == {Figure("default", "echo"): 1}


async def test_a_stopping_worker_adds_the_jobs_that_ended_since_its_last_beat(
    namespace: str, queue_redis: redis.asyncio.Redis
) -> None:
    keys = Keys(namespace)
    history = RedisHistory(queue_redis, keys)
    overview = RedisOverview(queue_redis, keys)
    activity = WorkerActivity()

    async def waiting() -> dict[str, int]:
        return await waiting_by_queue(overview, ["default"])

    heartbeat = Heartbeat(
        overview, activity, HistoryRecorder(history, activity.tally, activity.worker_id, waiting)
    )
    try:
        await heartbeat.start()
        for _ in range(5):
            ended(activity, "echo", "default", JobStatus.SUCCEEDED)
        await heartbeat.close()
        now = interval_of(time.time())
        figures = await history.read(now - 2, now)
        assert sum(interval.counts.get(Figure("default", "echo"), 0) for interval in figures) == 5
        assert await overview.workers() == []
    finally:
        delete_namespace(namespace)
