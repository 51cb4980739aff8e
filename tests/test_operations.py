"""The operator's view, in process: health probes, metrics, the dashboard's data, the worker
heartbeat and recent jobs on a real Redis, and the JSON log format."""

import io
import json
import logging
import logging.config
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
import redis.asyncio

from shared.activity import WorkerActivity
from shared.builtin_jobs import EchoParameters, EchoResult
from shared.cache import memory_cache
from shared.catalog import JobType
from shared.errors import RetryableJobError
from shared.events import MemoryJobEvents
from shared.jobs import JobContext
from shared.keys import Keys, new_job_id
from shared.logs import JsonFormatter, job_event, log_config
from shared.metrics import Metrics
from shared.overview.base import WORKER_STALE_SECONDS
from shared.overview.redis import RedisOverview
from shared.queue import QueuedJob
from shared.records import JobRecord, RecordStore, utcnow
from tests.conftest import client_for, finished_record, settings_for_test
from tests.deployments import QUEUE_DB, REDIS_HOST, REDIS_PORT
from tests.exposition import total
from worker.monitoring import Heartbeat, WorkerEndpoint
from worker.runner import JobRunner


async def submit(client: httpx.AsyncClient, name: str, parameters: dict[str, object]) -> str:
    response = await client.post(f"/jobs/{name}", json=parameters)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_liveness_and_readiness_answer_200_in_the_local_mode(
    local_client: httpx.AsyncClient,
) -> None:
    live = await local_client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "alive"}
    ready = await local_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "redis": None}
    assert (await local_client.get("/health")).json()["status"] == "ok"


async def test_metrics_count_each_job_by_type_and_outcome(
    local_client: httpx.AsyncClient,
) -> None:
    echoes = [await submit(local_client, "echo", {"message": f"m{n}"}) for n in range(3)]
    failures = [await submit(local_client, "fail", {"message": "no"}) for _ in range(2)]
    for job_id in echoes + failures:
        await finished_record(local_client, job_id)

    response = await local_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert total(text, "jobcache_jobs_submitted_total", job_type="echo") == 3
    assert total(text, "jobcache_jobs_submitted_total", job_type="fail") == 2
    assert total(text, "jobcache_jobs_started_total", job_type="echo") == 3
    assert total(text, "jobcache_jobs_succeeded_total", job_type="echo") == 3
    assert total(text, "jobcache_jobs_failed_total", job_type="fail") == 2
    assert total(text, "jobcache_jobs_failed_total", job_type="echo") == 0
    assert total(text, "jobcache_jobs_submitted_total", job_type="primes") == 0
    assert total(text, "jobcache_job_duration_seconds_count", job_type="echo") == 3
    assert total(text, "jobcache_job_duration_seconds_count", outcome="failed") == 2
    assert total(text, "jobcache_job_queue_wait_seconds_count") == 5
    assert total(text, "jobcache_jobs_running") == 0
    assert total(text, "jobcache_workers_alive") == 1
    assert total(text, "jobcache_queue_depth") == 0


async def test_cached_endpoint_hits_and_misses_are_counted(
    local_client: httpx.AsyncClient,
) -> None:
    for _ in range(3):
        assert (await local_client.get("/cached?rounds=3&seed=metrics")).status_code == 200
    text = (await local_client.get("/metrics")).text
    assert total(text, "jobcache_response_cache_requests_total", route="/cached") == 3
    assert total(text, "jobcache_response_cache_requests_total", namespace="computations") == 3
    assert total(text, "jobcache_response_cache_requests_total", result="miss") == 1
    assert total(text, "jobcache_response_cache_requests_total", result="hit") == 2


FLAKY = JobType("flaky", "fails once", EchoParameters, EchoResult, retries=1, retry_delay=0.01)


async def test_a_retried_attempt_is_counted_and_timed_by_its_outcome() -> None:
    attempts: list[int] = []

    async def flaky(parameters: EchoParameters, context: JobContext) -> EchoResult:
        attempts.append(context.attempt)
        if context.attempt == 1:
            raise RetryableJobError("busy")
        return EchoResult(message=parameters.message)

    cache = memory_cache(settings_for_test(cache_namespace=f"test-{uuid.uuid4().hex[:12]}"))
    activity = WorkerActivity(Metrics(worker=True))
    with ThreadPoolExecutor(1) as pool:
        runner = JobRunner(RecordStore(cache, 60, MemoryJobEvents()), pool, activity)
        job_id, created = new_job_id(), utcnow() - timedelta(seconds=2)
        for attempt in (1, 2):
            job = QueuedJob(
                id=job_id, name="flaky", parameters={"message": "x"}, created_at=created
            )
            await runner.run(replace(FLAKY, implementation=flaky), job, attempt=attempt)
    await cache.close()

    registry = activity.metrics.registry
    labels = {"job_type": "flaky"}
    assert attempts == [1, 2]
    assert registry.get_sample_value("jobcache_jobs_started_total", labels) == 2
    assert registry.get_sample_value("jobcache_jobs_retried_total", labels) == 1
    assert registry.get_sample_value("jobcache_jobs_succeeded_total", labels) == 1
    for outcome in ("retried", "succeeded"):
        count = registry.get_sample_value(
            "jobcache_job_duration_seconds_count", {**labels, "outcome": outcome}
        )
        assert count == 1, outcome
    # Queue wait is measured once, to the first start: two seconds after submission here.
    assert registry.get_sample_value("jobcache_job_queue_wait_seconds_count", labels) == 1
    waited = registry.get_sample_value("jobcache_job_queue_wait_seconds_sum", labels)
    assert waited is not None and 2 <= waited < 5
    status = activity.status()
    assert (status.succeeded, status.retried, status.failed, status.running) == (1, 1, 0, [])


async def test_dashboard_state_shows_the_embedded_worker_and_recent_jobs_newest_first(
    local_client: httpx.AsyncClient,
) -> None:
    first = await submit(local_client, "echo", {"message": "first"})
    failed = await submit(local_client, "fail", {"message": "the disk is on fire"})
    for job_id in (first, failed):
        await finished_record(local_client, job_id)

    response = await local_client.get("/dashboard/state")
    assert response.status_code == 200
    state = response.json()
    assert state["backend"] == "local"
    assert state["queue"] == {
        "waiting": 0,
        "running": 0,
        "deferred": 0,
        "oldest_waiting_seconds": None,
    }
    [worker] = state["workers"]
    assert worker["id"].startswith("embedded-")
    assert (worker["succeeded"], worker["failed"]) == (1, 1)
    assert worker["metrics_address"] is None
    assert [job["id"] for job in state["recent"]] == [failed, first]
    assert state["recent"][0]["status"] == "failed"
    assert state["recent"][0]["error"] == "the disk is on fire"
    assert "result" not in state["recent"][1]


async def test_dashboard_page_loads_only_its_own_assets(local_client: httpx.AsyncClient) -> None:
    page = await local_client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    for asset, kind in (("dashboard.js", "javascript"), ("dashboard.css", "css")):
        response = await local_client.get(f"/dashboard/assets/{asset}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        assert "https://" not in response.text
    assert (await local_client.get("/dashboard/assets/index.html")).status_code == 404
    assert (await local_client.get("/dashboard/assets/..%2Fobservability.py")).status_code == 404


@pytest.fixture
async def overview_client() -> AsyncIterator[tuple[RedisOverview, redis.asyncio.Redis, str]]:
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=QUEUE_DB)
    names = Keys(namespace)
    yield RedisOverview(client, names), client, namespace
    keys = [names.workers, names.queue("default"), names.queue("cpu")]
    await client.delete(*keys, *[key async for key in client.scan_iter(f"{namespace}:worker:*")])
    await client.aclose()


async def test_a_worker_is_listed_while_its_heartbeat_is_fresh_and_gone_when_withdrawn(
    overview_client: tuple[RedisOverview, redis.asyncio.Redis, str],
) -> None:
    overview, client, namespace = overview_client
    busy, idle = WorkerActivity(concurrency=3), WorkerActivity()
    record = JobRecord(id=new_job_id(), name="echo", attempts=1, started_at=utcnow())
    busy.started(record)
    busy.metrics_address = "10.1.2.3:9100"
    await overview.announce(busy.status())
    await overview.announce(idle.status())

    listed = {worker.id: worker for worker in await overview.workers()}
    assert set(listed) == {busy.worker_id, idle.worker_id}
    assert [job.id for job in listed[busy.worker_id].running] == [record.id]
    assert listed[busy.worker_id].concurrency == 3
    assert listed[busy.worker_id].metrics_address == "10.1.2.3:9100"
    ttl = await client.pttl(Keys(namespace).worker(busy.worker_id))
    assert 0 < ttl <= WORKER_STALE_SECONDS * 1000

    # A worker whose beat is older than WORKER_STALE_SECONDS is not listed, even if its key
    # were still there (a crashed worker's last beat).
    await client.zadd(Keys(namespace).workers, {idle.worker_id: 1.0})
    assert [worker.id for worker in await overview.workers()] == [busy.worker_id]

    await overview.withdraw(busy.worker_id)
    assert await overview.workers() == []
    assert await client.exists(Keys(namespace).worker(busy.worker_id)) == 0


async def test_queue_depth_counts_due_jobs_and_deferred_retries_apart(
    overview_client: tuple[RedisOverview, redis.asyncio.Redis, str],
) -> None:
    overview, client, namespace = overview_client
    now_ms = utcnow().timestamp() * 1000
    keys = Keys(namespace)
    await client.zadd(
        keys.queue("default"), {"a": now_ms - 10, "b": now_ms - 5, "c": now_ms + 60_000}
    )
    await client.zadd(keys.queue("cpu"), {"d": now_ms - 10})
    depths = await overview.queue_depths(["default", "cpu", "idle"])
    assert {queue: (depth.due, depth.deferred) for queue, depth in depths.items()} == {
        "default": (2, 1),
        "cpu": (1, 0),
        "idle": (0, 0),
    }


async def test_the_oldest_waiting_job_is_the_oldest_due_one_that_is_not_running(
    overview_client: tuple[RedisOverview, redis.asyncio.Redis, str],
) -> None:
    overview, client, namespace = overview_client
    now_ms = round(utcnow().timestamp() * 1000)
    keys = Keys(namespace)
    # A queue holds its running jobs until they end: `a` runs, `b` waits, `c` is not due.
    await client.zadd(
        keys.queue("default"), {"a": now_ms - 9000, "b": now_ms - 4000, "c": now_ms + 60_000}
    )
    await client.zadd(keys.queue("cpu"), {"d": now_ms - 1000})
    depths = await overview.queue_depths(["default", "cpu", "idle"], running={"a", "d"})
    assert {queue: depth.oldest_due_at for queue, depth in depths.items()} == {
        "default": (now_ms - 4000) / 1000,
        "cpu": None,
        "idle": None,
    }


@pytest.fixture
def captured_json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    config = log_config("INFO", "json")
    logging.config.dictConfig(config)
    handler = logging.getLogger("worker").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)
    logging.config.dictConfig(log_config("INFO"))
    # The plain format leaves other loggers alone: take back what the JSON one gave them.
    for name in ("", "uvicorn", "arq"):
        logger = logging.getLogger(name)
        for json_handler in [h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)]:
            logger.removeHandler(json_handler)
        logger.propagate = True


def test_a_json_log_line_carries_the_job_fields_and_nothing_else_passed_along(
    captured_json_logs: io.StringIO,
) -> None:
    logger = logging.getLogger("worker.test")
    fields = job_event("job.succeeded", "Z3o0bXrT6F1bd9nJ3u3c1A", "echo", attempt=2, duration=0.5)
    logger.info("job %s done", "Z3o0bXrT6F1bd9nJ3u3c1A", extra={**fields, "payload": "secret"})
    line = json.loads(captured_json_logs.getvalue().strip())
    assert line["message"] == "job Z3o0bXrT6F1bd9nJ3u3c1A done"
    assert line["level"] == "INFO" and line["logger"] == "worker.test"
    assert {key: line[key] for key in ("event", "job_id", "job_type", "attempt", "duration")} == {
        "event": "job.succeeded",
        "job_id": "Z3o0bXrT6F1bd9nJ3u3c1A",
        "job_type": "echo",
        "attempt": 2,
        "duration": 0.5,
    }
    assert "payload" not in line and "secret" not in captured_json_logs.getvalue()


async def test_an_app_in_the_json_format_logs_each_request_as_json(
    captured_json_logs: io.StringIO,
) -> None:
    settings = settings_for_test(cache_backend="local", cpu_workers=1, log_format="json")
    async with client_for(settings) as client:
        # The lifespan applied the format; send its lines to the capture too.
        handler = logging.getLogger("api").handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(captured_json_logs)
        job_id = await submit(client, "echo", {"message": "not in the logs"})
        await finished_record(client, job_id)
    lines = [json.loads(line) for line in captured_json_logs.getvalue().splitlines()]
    events = [(line.get("event"), line.get("job_id")) for line in lines]
    assert ("job.submitted", job_id) in events
    assert ("job.started", job_id) in events
    assert ("job.succeeded", job_id) in events
    requests = [line for line in lines if line.get("event") == "request"]
    assert {"method": "POST", "route": "/jobs/echo", "status_code": 202}.items() <= requests[
        0
    ].items()
    assert all("not in the logs" not in line["message"] for line in lines)


async def test_with_api_keys_the_dashboard_data_needs_a_key_and_shows_only_its_jobs(
    namespace: str,
) -> None:
    alice, bob = "alice-key-for-the-dashboard-test", "bob-key-for-the-dashboard-test"
    settings = settings_for_test(
        cache_backend="local", cache_namespace=namespace, cpu_workers=1, api_keys=f"{alice},{bob}"
    )
    async with client_for(settings) as client:
        mine = {"Authorization": f"Bearer {alice}"}
        theirs = {"Authorization": f"Bearer {bob}"}
        own = await client.post("/jobs/echo", json={"message": "a"}, headers=mine)
        other = await client.post("/jobs/echo", json={"message": "b"}, headers=theirs)
        assert own.status_code == other.status_code == 202

        # The page itself holds no data; its data does.
        assert (await client.get("/dashboard")).status_code == 200
        assert (await client.get("/dashboard/state")).status_code == 401
        state = (await client.get("/dashboard/state", headers=mine)).json()
        assert [job["id"] for job in state["recent"]] == [own.json()["id"]]
        assert len(state["workers"]) == 1


async def test_a_worker_endpoint_is_not_ready_before_its_first_heartbeat_and_answers_get_only(
    overview_client: tuple[RedisOverview, redis.asyncio.Redis, str],
) -> None:
    overview, _, _ = overview_client
    activity = WorkerActivity()
    heartbeat = Heartbeat(overview, activity)
    endpoint = WorkerEndpoint(activity, heartbeat)
    port = await endpoint.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/health/ready")).status_code == 503
            await heartbeat.start()
            assert (await client.get("/health/ready")).json() == {"status": "ready", "redis": True}
            assert (await client.get("/health/live")).status_code == 200
            assert (await client.post("/metrics")).status_code == 405
            head = await client.head("/metrics")
            assert head.status_code == 200 and head.content == b""
            metrics = await client.get("/metrics?format=text")
            assert total(metrics.text, "jobcache_jobs_running") == 0
    finally:
        await endpoint.close()
        await heartbeat.close()
    assert await overview.workers() == []
