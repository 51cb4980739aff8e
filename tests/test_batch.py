"""POST /jobs/{name}/batch: up to MAX_BATCH jobs in one request, all validated before any is
queued, queued all or none in a fixed number of Redis round trips, each counted by the quotas,
their records answered in the order given. Both modes."""

from typing import Any

import httpx
import pytest

from shared.errors import BackendUnavailableError
from shared.keys import Keys, new_job_id
from shared.queue import QueuedJob
from shared.queue.redis import RedisQueue, open_arq_pool
from shared.records import JobRecord
from shared.replication import ReplicaAcks, ReplicasBehindError
from tests.conftest import finished_record, served_for, settings_in
from tests.deployments import CACHE_DB, QUEUE_DB, redis_client
from tests.round_trips import round_trips

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

KEY = "batcher-3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f"
AUTHORIZED = {"Authorization": f"Bearer {KEY}"}


def messages(count: int, prefix: str = "job") -> list[dict[str, Any]]:
    return [{"message": f"{prefix} {number}"} for number in range(count)]


async def listed_ids(client: httpx.AsyncClient, **headers: str) -> list[str]:
    response = await client.get("/jobs", params={"limit": 500}, headers=headers)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def queued_in_redis(namespace: str) -> int:
    with redis_client(QUEUE_DB) as queue:
        return int(queue.zcard(Keys(namespace).queue("default")))


async def test_a_batch_is_answered_in_order_and_every_job_runs(namespace: str) -> None:
    async with served_for(settings_in("local", namespace)) as (_, client):
        response = await client.post("/jobs/echo/batch", json=messages(5))
        assert response.status_code == 202, response.text
        assert "location" not in response.headers
        jobs = response.json()["jobs"]
        assert [(job["name"], job["status"]) for job in jobs] == [("echo", "queued")] * 5
        assert len({job["id"] for job in jobs}) == 5
        for number, job in enumerate(jobs):
            record = await finished_record(client, job["id"])
            assert record["result"] == {"message": f"job {number}"}


async def test_a_batch_of_many_is_queued_in_redis(mode: str, namespace: str) -> None:
    async with served_for(settings_in(mode, namespace)) as (_, client):
        response = await client.post("/jobs/echo/batch", json=messages(1000))
        assert response.status_code == 202, response.text
        job_ids = [job["id"] for job in response.json()["jobs"]]
        assert len(set(job_ids)) == 1000
        if mode == "redis":
            assert queued_in_redis(namespace) == 1000
        first = await client.get(f"/jobs/{job_ids[0]}")
        assert first.status_code == 200


async def test_bad_items_are_named_by_index_and_field_and_nothing_is_queued(
    mode: str, namespace: str
) -> None:
    async with served_for(settings_in(mode, namespace)) as (_, client):
        body = [{"message": "ok"}, {"message": 5}, {"message": "ok"}, {"text": "x"}]
        response = await client.post("/jobs/echo/batch", json=body)
        assert response.status_code == 422, response.text
        where = [issue["loc"] for issue in response.json()["detail"]]
        assert where == [["body", 1, "message"], ["body", 3, "message"], ["body", 3, "text"]]
        assert await listed_ids(client) == []
        if mode == "redis":
            assert queued_in_redis(namespace) == 0
            with redis_client(CACHE_DB) as cache:
                assert list(cache.scan_iter(match=f"{namespace}:*")) == []


async def test_an_empty_batch_or_one_over_max_batch_is_422(mode: str, namespace: str) -> None:
    async with served_for(settings_in(mode, namespace, max_batch=3)) as (_, client):
        empty = await client.post("/jobs/echo/batch", json=[])
        assert empty.status_code == 422
        assert empty.json()["detail"][0]["msg"].startswith("List should have at least 1 item")
        too_many = await client.post("/jobs/echo/batch", json=messages(4))
        assert too_many.status_code == 422
        [issue] = too_many.json()["detail"]
        assert issue["loc"] == ["body"]
        assert "at most 3 parameter sets (MAX_BATCH), not 4" in issue["msg"]
        not_a_list = await client.post("/jobs/echo/batch", json={"message": "hi"})
        assert not_a_list.status_code == 422
        assert await listed_ids(client) == []
        assert (await client.post("/jobs/echo/batch", json=messages(3))).status_code == 202


async def test_an_unknown_job_type_batch_is_404_listing_the_known_ones(
    local_client: httpx.AsyncClient,
) -> None:
    response = await local_client.post("/jobs/no_such_job/batch", json=[{}])
    assert response.status_code == 404
    assert "echo" in response.json()["known_job_types"]


async def test_quotas_count_each_job_of_a_batch_all_or_none(mode: str, namespace: str) -> None:
    settings = settings_in(mode, namespace, api_keys=KEY, quota_jobs_in_flight=5)
    sleeps = [{"seconds": 30}] * 3
    async with served_for(settings) as (_, client):
        first = await client.post("/jobs/sleep/batch", json=sleeps, headers=AUTHORIZED)
        assert first.status_code == 202, first.text
        refused = await client.post("/jobs/sleep/batch", json=sleeps, headers=AUTHORIZED)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert "5 unfinished jobs; 3 more would exceed it" in refused.json()["detail"]
        assert len(await listed_ids(client, **AUTHORIZED)) == 3, "nothing of it was queued"
        too_large = await client.post(
            "/jobs/sleep/batch", json=[{"seconds": 30}] * 6, headers=AUTHORIZED
        )
        assert too_large.status_code == 429
        assert "send them in batches of at most 5" in too_large.json()["detail"]
        rest = await client.post("/jobs/sleep/batch", json=sleeps[:2], headers=AUTHORIZED)
        assert rest.status_code == 202, "the refused batches took nothing of the quota"
        for job in first.json()["jobs"] + rest.json()["jobs"]:
            cancelled = await client.post(f"/jobs/{job['id']}/cancel", headers=AUTHORIZED)
            assert cancelled.status_code == 200


async def test_a_batch_larger_than_the_rate_is_refused_at_once(mode: str, namespace: str) -> None:
    settings = settings_in(mode, namespace, api_keys=KEY, quota_submissions_per_second=4)
    async with served_for(settings) as (_, client):
        over = await client.post("/jobs/echo/batch", json=messages(5), headers=AUTHORIZED)
        assert over.status_code == 429
        assert "may submit 4 jobs a second, fewer than the 5" in over.json()["detail"]
        assert await listed_ids(client, **AUTHORIZED) == []


async def test_a_batch_costs_the_same_round_trips_as_one_job(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Redis, with quotas: the quota script, the records' pipeline (with their list
    entries) and the queue's pipeline, whether the batch holds 1 job or 500."""
    settings = settings_in("redis", namespace, api_keys=KEY, quota_jobs_in_flight=1000)
    async with served_for(settings) as (_, client):
        await client.post("/jobs/echo/batch", json=messages(1), headers=AUTHORIZED)  # warm
        counts = []
        for size in (1, 500):
            with round_trips() as sent:
                response = await client.post(
                    "/jobs/echo/batch", json=messages(size), headers=AUTHORIZED
                )
                assert response.status_code == 202, response.text
            counts.append(len(sent))
        assert counts == [3, 3]
        with round_trips() as single:
            response = await client.post("/jobs/echo", json={"message": "one"}, headers=AUTHORIZED)
        assert response.status_code == 202
        assert len(single) == 3


async def test_a_batch_that_fails_to_queue_leaves_nothing_behind(
    mode: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_in(mode, namespace, api_keys=KEY, quota_jobs_in_flight=3)
    async with served_for(settings) as (services, client):

        async def refuse(jobs: list[QueuedJob]) -> None:
            raise BackendUnavailableError("Redis failed to queue jobs: ConnectionError")

        with monkeypatch.context() as patched:
            patched.setattr(services.backend.queue, "enqueue_many", refuse)
            failed = await client.post("/jobs/echo/batch", json=messages(3), headers=AUTHORIZED)
        assert failed.status_code == 503
        assert await listed_ids(client, **AUTHORIZED) == []
        owner = services.api_keys.identify(AUTHORIZED["Authorization"]).owner
        assert await services.backend.listing.older(owner, None, 9) == []
        # Its jobs were released from the quota: a batch as large is admitted now.
        again = await client.post("/jobs/echo/batch", json=messages(3), headers=AUTHORIZED)
        assert again.status_code == 202, again.text


async def test_a_batch_the_replicas_did_not_take_is_taken_off_the_queue(namespace: str) -> None:
    """REDIS_MIN_REPLICAS_ACK=1 against a Redis without replicas: WAIT comes back short, and
    every job of the batch is taken back."""
    settings = settings_in("redis", namespace)
    keys = Keys(namespace)
    pool = await open_arq_pool(settings)
    try:
        queue = RedisQueue(pool, keys, ReplicaAcks(replicas=1, timeout=0.05))
        jobs = [
            QueuedJob.of(JobRecord(id=job_id, name="echo"), {"message": "x"}, "default")
            for job_id in (new_job_id(), new_job_id(), new_job_id())
        ]
        with pytest.raises(ReplicasBehindError):
            await queue.enqueue_many(jobs)
        assert await pool.zcard(keys.queue("default")) == 0
        assert await pool.exists(*(f"arq:job:{job.id}" for job in jobs)) == 0
    finally:
        await pool.aclose()
