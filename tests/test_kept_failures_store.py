"""The kept failures' store, on both backends: kept jobs come back as they were queued, newest
first, by queue and by job type; a job is taken out once however many ask at once; entries
older than FAILED_JOB_TTL are trimmed."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio

from shared.failures import KeptFailures
from shared.failures.memory import MemoryKeptFailures
from shared.failures.redis import RedisKeptFailures
from shared.keys import Keys, new_job_id
from shared.queue import QueuedJob
from tests.deployments import QUEUE_DB, REDIS_HOST, REDIS_PORT, delete_namespace

TTL = 3600


@pytest.fixture(params=["memory", "redis"])
async def failures(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[KeptFailures]:
    if request.param == "memory":
        yield MemoryKeptFailures(TTL)
        return
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=QUEUE_DB)
    try:
        yield RedisKeptFailures(client, Keys(namespace), TTL)
    finally:
        await client.aclose()
        delete_namespace(namespace)


def queued(name: str = "echo", queue: str = "default") -> QueuedJob:
    return QueuedJob(
        id=new_job_id(),
        name=name,
        parameters={"message": "hi", "nested": {"n": [1, 2]}},
        created_at=datetime.now(UTC),
        owner="ab" * 32,
        queue=queue,
        callback_url="https://example.test/hook",
    )


async def test_kept_jobs_come_back_newest_first_by_queue_and_type(failures: KeptFailures) -> None:
    now = datetime.now(UTC)
    echo_old, echo_new, other = queued(), queued(), queued("resize")
    cpu = queued("primes", queue="cpu")
    await failures.keep(echo_old, now - timedelta(minutes=10))
    await failures.keep(echo_new, now - timedelta(minutes=1))
    await failures.keep(other, now - timedelta(minutes=5))
    await failures.keep(cpu, now)

    assert await failures.newest("default") == [echo_new.id, other.id, echo_old.id]
    assert await failures.newest("default", name="echo") == [echo_new.id, echo_old.id]
    recent = await failures.newest("default", since=now - timedelta(minutes=6))
    assert recent == [echo_new.id, other.id]
    assert await failures.newest("default", count=1) == [echo_new.id]
    assert await failures.count("default") == 3 and await failures.count("cpu") == 1
    assert await failures.get_many("default", [echo_old.id, "gone", other.id]) == [
        echo_old,
        other,
    ]

    taken = await failures.take(echo_old.id, "default", "echo")
    assert taken == echo_old, "as it was queued: parameters, owner, callback"
    assert await failures.take(echo_old.id, "default", "echo") is None
    assert await failures.newest("default", name="echo") == [echo_new.id]
    assert await failures.take(cpu.id, "default", "primes") is None, "another queue's"


async def test_one_of_many_takers_at_once_gets_the_job(failures: KeptFailures) -> None:
    job = queued()
    await failures.keep(job, datetime.now(UTC))
    taken = await asyncio.gather(*(failures.take(job.id, "default", "echo") for _ in range(10)))
    assert [each for each in taken if each is not None] == [job]


async def test_failures_older_than_the_ttl_are_trimmed(failures: KeptFailures) -> None:
    now = datetime.now(UTC)
    stale, fresh = queued(), queued()
    await failures.keep(stale, now - timedelta(seconds=TTL + 60))
    await failures.keep(fresh, now)
    assert await failures.newest("default") == [fresh.id]
    assert await failures.count("default") == 1
