"""A subscription (shared/subscriptions.py) that receives a malformed message logs it, without
its payload, and goes on listening: job events and cancels, on a real Redis."""

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from shared.catalog import DEFAULT_QUEUE
from shared.events.redis import RedisJobEvents
from shared.keys import new_job_id
from shared.queue.redis import RedisQueue, open_arq_pool
from shared.records import JobRecord, JobStatus
from tests.conftest import eventually, settings_for_test
from tests.deployments import REDIS_HOST, REDIS_PORT

DB = 1
"""Pub/sub ignores the database; the clients use the cache's, and these tests write no key."""


@pytest.fixture
async def publisher() -> AsyncIterator[redis.asyncio.Redis]:
    """A client of its own, as a foreign or half-upgraded peer publishing on the channel."""
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB)
    yield client
    await client.aclose()


async def test_a_malformed_job_event_is_logged_and_later_events_still_arrive(
    namespace: str, publisher: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    channel = f"{namespace}:job-events"
    job_id = new_job_id()
    record = JobRecord(id=job_id, name="echo", status=JobStatus.SUCCEEDED)
    malformed: list[str | bytes] = [
        f"{job_id} not json",
        f"{job_id} " + '{"id": 1}',
        f"{job_id} ".encode() + b"\xff\xfe",
        b"\xff\xfe",
    ]
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB)
    events = RedisJobEvents(client, channel)
    try:
        await events.start_listening()
        with (
            caplog.at_level(logging.WARNING, logger="shared.subscriptions"),
            events.watch(job_id) as updates,
        ):
            for message in malformed:
                await publisher.publish(channel, message)
            valid = RedisJobEvents.message(record, record.model_dump_json())
            await publisher.publish(channel, valid)

            assert await updates.next(5) == record
        subscribers = dict(await publisher.pubsub_numsub(channel))
        assert subscribers[channel.encode()] == 1, "the subscription still listens"
    finally:
        await events.close()
        await client.aclose()

    ignored = [
        entry.getMessage()
        for entry in caplog.records
        if "ignored a malformed message" in entry.getMessage()
    ]
    assert len(ignored) >= 3, "each malformed event for the watched job is logged"
    for line in ignored:
        assert channel in line
        assert "not json" not in line and '"id"' not in line, f"a payload was logged: {line}"


async def test_one_announcement_of_several_records_reaches_each_watcher_despite_a_bad_line(
    namespace: str, publisher: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker announces the jobs it ended together in one message, a line each: every
    watched job gets its record, even when a line between them is malformed."""
    channel = f"{namespace}:job-events"
    first, second = (
        JobRecord(id=new_job_id(), name="echo", status=JobStatus.SUCCEEDED) for _ in range(2)
    )
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB)
    events = RedisJobEvents(client, channel)
    try:
        await events.start_listening()
        with (
            caplog.at_level(logging.WARNING, logger="shared.subscriptions"),
            events.watch(first.id) as first_updates,
            events.watch(second.id) as second_updates,
        ):
            lines = [
                RedisJobEvents.message(first, first.model_dump_json()),
                f"{second.id} not json",
                RedisJobEvents.message(second, second.model_dump_json()),
            ]
            await publisher.publish(channel, "\n".join(lines))

            assert await first_updates.next(5) == first
            assert await second_updates.next(5) == second
    finally:
        await events.close()
        await client.aclose()
    assert any("ignored a malformed message" in entry.getMessage() for entry in caplog.records)


async def test_a_malformed_cancel_is_ignored_and_the_next_cancel_stops_the_job(
    namespace: str, publisher: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for_test(
        cache_backend="redis", cache_namespace=namespace, redis_queue_db=DB
    )
    keys = settings.keys
    job_id = new_job_id()
    stopped: list[str] = []
    pool = await open_arq_pool(settings)
    queue = RedisQueue(pool, keys)
    try:
        with caplog.at_level(logging.WARNING, logger="shared.subscriptions"):
            await queue.listen_for_cancels(stopped.append)
            await publisher.publish(keys.cancel_channel, b"\xff\xfe")  # not UTF-8: no job id
            # Its queue entry and arq job key never existed: the cancel creates no key.
            await queue.cancel(job_id, DEFAULT_QUEUE)

            async def stopped_the_job() -> bool:
                return stopped == [job_id]

            await eventually(stopped_the_job)
    finally:
        await queue.close()
        await pool.aclose()
    assert any("ignored a malformed message" in entry.getMessage() for entry in caplog.records)
