"""The metrics an operator alerts on, scraped from the api in process: requests by route and
status, 429s by quota, the series alerts read at 0 from the start, and each mode's families."""

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import client_for, finished_record, settings_for_test, settings_in
from tests.deployments import delete_namespace
from tests.exposition import families, samples, total
from tests.processes import RedisServer, redis_server

KEY = "alerting-metrics-key-0123456789"
WORKER_FAMILIES = (
    "jobcache_jobs_started_total",
    "jobcache_jobs_succeeded_total",
    "jobcache_jobs_redelivered_total",
    "jobcache_jobs_running",
    "jobcache_worker_slots",
    "jobcache_callback_deliveries_total",
)


async def test_the_series_alerts_read_exist_at_zero_before_anything_happens() -> None:
    settings = settings_in("local", f"test-{uuid.uuid4().hex[:12]}", worker_concurrency=7)
    async with client_for(settings) as client:
        text = (await client.get("/metrics")).text

    # An error's first occurrence is an increase from 0, which rate() sees, not a new series.
    for status in ("5xx", "503"):
        [series] = samples(
            text,
            "jobcache_http_requests_total",
            route="/jobs/{job_id}",
            method="GET",
            status_class="5xx",
            status=status,
        )
        assert series.value == 0
    [refused] = samples(text, "jobcache_http_requests_total", route="/jobs/echo", status="429")
    assert refused.value == 0
    for quota in ("jobs_in_flight", "submissions_per_second"):
        assert [s.value for s in samples(text, "jobcache_quota_refusals_total", quota=quota)] == [0]
    for job_type in ("echo", "sleep", "fail"):
        [redelivered] = samples(text, "jobcache_jobs_redelivered_total", job_type=job_type)
        assert redelivered.value == 0
    assert [s.value for s in samples(text, "jobcache_callback_deliveries_total", outcome="failed")]
    # The local mode's api runs the jobs: it owns a worker's families, its slots among them.
    assert total(text, "jobcache_worker_slots") == 7
    assert total(text, "jobcache_system_view_up") == 1
    assert "_created" not in text


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning:aiocache")
async def test_a_429_a_503_and_an_unknown_path_are_counted_by_route_status_and_quota(
    private_redis: RedisServer,
) -> None:
    settings = settings_for_test(
        cache_backend="redis",
        cache_namespace=f"test-{uuid.uuid4().hex[:12]}",
        redis_host=private_redis.host,
        redis_port=private_redis.port,
        api_keys=KEY,
        quota_jobs_in_flight=1,
        cpu_workers=1,
    )
    mine = {"Authorization": f"Bearer {KEY}"}
    async with client_for(settings) as client:
        # No worker: the first job stays queued, and holds the key's one unfinished job.
        first = await client.post("/jobs/sleep", json={"seconds": 0.1}, headers=mine)
        assert first.status_code == 202, first.text
        job_id = first.json()["id"]
        assert (
            await client.post("/jobs/sleep", json={"seconds": 0.1}, headers=mine)
        ).status_code == 429
        assert (await client.get("/no/such/path/4711")).status_code == 404
        assert (await client.request("BREW", "/jobs", headers=mine)).status_code == 405

        private_redis.stop()
        try:
            assert (await client.get(f"/jobs/{job_id}", headers=mine)).status_code == 503
            text = (await client.get("/metrics")).text
        finally:
            private_redis.start()

    http = "jobcache_http_requests_total"
    assert total(text, http, route="/jobs/sleep", method="POST", status_class="2xx") == 1
    assert total(text, http, route="/jobs/sleep", method="POST", status="429") == 1
    assert total(text, http, route="/jobs/sleep", method="POST", status_class="4xx") == 1
    assert total(text, http, route="/jobs/{job_id}", method="GET", status="503") == 1
    assert total(text, http, route="/jobs/{job_id}", status_class="5xx", status="5xx") == 0
    assert total(text, http, route="unmatched", method="GET", status_class="4xx") == 1
    assert total(text, http, route="/jobs", method="other", status_class="4xx") == 1
    assert total(text, "jobcache_quota_refusals_total", quota="jobs_in_flight") == 1
    assert total(text, "jobcache_quota_refusals_total", quota="submissions_per_second") == 0
    duration = "jobcache_http_request_duration_seconds_count"
    assert total(text, duration, route="/jobs/{job_id}", method="GET") == 1
    # Never a raw path, a key or an owner as a label.
    assert "4711" not in text
    assert KEY not in text
    assert "BREW" not in text


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_namespace(name)


# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning:aiocache")
async def test_an_api_in_the_redis_mode_exports_none_of_the_worker_families(
    redis_namespace: str,
) -> None:
    async with client_for(settings_in("redis", redis_namespace)) as client:
        await client.post("/jobs/echo", json={"message": "queued for a worker"})
        text = (await client.get("/metrics")).text
    exported = families(text)
    for name in WORKER_FAMILIES:
        assert name not in exported, name
    assert not samples(text, "jobcache_redis_errors_total", operation="heartbeat")
    # Its own families are there, the system's view read from Redis among them.
    assert total(text, "jobcache_jobs_submitted_total", job_type="echo") == 1
    assert total(text, "jobcache_system_view_up") == 1
    assert total(text, "jobcache_queue_depth", queue="default") == 1
    # No worker takes it: it has waited since it was queued, and no job waits on `cpu`.
    assert total(text, "jobcache_queue_oldest_waiting_seconds", queue="default") > 0
    assert total(text, "jobcache_queue_oldest_waiting_seconds", queue="cpu") == 0
    assert samples(text, "jobcache_quota_refusals_total", quota="jobs_in_flight")
    assert samples(text, "jobcache_redis_errors_total", operation="request")
    assert "_created" not in text


async def test_jobs_run_in_the_local_mode_show_in_the_api_s_worker_families(
    local_client: httpx.AsyncClient,
) -> None:
    job_id = (await local_client.post("/jobs/echo", json={"message": "m"})).json()["id"]
    await finished_record(local_client, job_id)
    text = (await local_client.get("/metrics")).text
    assert total(text, "jobcache_jobs_started_total", job_type="echo") == 1
    assert total(text, "jobcache_jobs_redelivered_total", job_type="echo") == 0
    assert total(text, "jobcache_http_requests_total", route="/jobs/echo", status="2xx") == 1
