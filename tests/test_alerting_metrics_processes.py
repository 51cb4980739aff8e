"""A worker's metrics to alert on, scraped from real worker processes: its slots beside its
running jobs, none of the api's families, and a job run again after its worker was killed."""

import re
from contextlib import ExitStack

import httpx
import pytest

from tests.deployments import (
    Deployment,
    start_all,
    started_lines,
    wait_finished,
)
from tests.exposition import families, samples, total
from tests.processes import ChildProcess, api, wait_for, worker

pytestmark = pytest.mark.processes

API_FAMILIES = (
    "jobcache_http_requests_total",
    "jobcache_http_request_duration_seconds_count",
    "jobcache_quota_refusals_total",
    "jobcache_response_cache_requests_total",
    "jobcache_system_view_up",
    "jobcache_workers_alive",
    "jobcache_queue_depth",
)
ENDPOINT = re.compile(r"metrics and health at http://(\S+)/metrics")


def endpoint_of(child: ChildProcess) -> str:
    """The address of a worker's metrics endpoint, as it logged it when it started."""
    found = ENDPOINT.search(child.output())
    assert found is not None, "the worker did not log its metrics endpoint"
    return found.group(1)


def test_a_worker_exports_its_slots_and_none_of_the_api_families(deployment: Deployment) -> None:
    with ExitStack() as stack:
        start_all(stack, deployment, workers=1, WORKER_CONCURRENCY="3")
        [log] = deployment.logs.glob("worker-*.log")
        address = ENDPOINT.search(log.read_text())
        assert address is not None
        text = httpx.get(f"http://{address.group(1)}/metrics", timeout=5).text

    assert total(text, "jobcache_worker_slots") == 3
    assert total(text, "jobcache_jobs_running") == 0
    exported = families(text)
    for name in API_FAMILIES:
        assert name not in exported, name
    assert samples(text, "jobcache_redis_errors_total", operation="heartbeat")
    assert not samples(text, "jobcache_redis_errors_total", operation="request")
    assert samples(text, "jobcache_callback_deliveries_total", outcome="failed")
    assert "_created" not in text


def test_a_job_whose_worker_was_killed_counts_as_redelivered_where_it_runs_again(
    deployment: Deployment,
) -> None:
    environment = deployment.environment(WORKER_LEASE="1")
    with (
        api(environment, deployment.logs / "api.log") as served,
        httpx.Client(base_url=served.url, timeout=5) as client,
    ):
        with worker(environment, deployment.logs / "worker-a.log", name="worker-a") as first:
            job_id = deployment.submit(client, "sleep", {"seconds": 1.5})
            wait_for(
                lambda: started_lines(first.output(), job_id),
                10,
                what="worker-a starts the job",
            )
            first.process.kill()  # SIGKILL: no grace, nothing recorded; its lease runs out
            first.process.wait(5)
        with worker(environment, deployment.logs / "worker-b.log", name="worker-b") as second:
            record = wait_finished(client, job_id, timeout=20)
            text = httpx.get(f"http://{endpoint_of(second)}/metrics", timeout=5).text
            log = second.output()

    assert record["status"] == "succeeded"
    assert record["attempts"] == 2
    assert total(text, "jobcache_jobs_redelivered_total", job_type="sleep") == 1
    assert total(text, "jobcache_jobs_started_total", job_type="sleep") == 1
    assert total(text, "jobcache_jobs_retried_total") == 0
    assert f"job {job_id} (sleep): attempt 2 starts again" in log


def oldest_waiting(client: httpx.Client) -> float:
    return total(
        client.get("/metrics").text, "jobcache_queue_oldest_waiting_seconds", queue="default"
    )


def running_on_default(client: httpx.Client) -> int:
    [queue] = [q for q in client.get("/dashboard/state").json()["queues"] if q["name"] == "default"]
    running: int = queue["running"]
    return running


def test_the_oldest_waiting_job_counts_a_job_waiting_for_a_slot_not_one_running(
    deployment: Deployment,
) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1, WORKER_CONCURRENCY="1")
        with httpx.Client(base_url=served.url, timeout=5) as client:
            deployment.submit(client, "sleep", {"seconds": 3})
            # Running, and in the worker's heartbeat: on the queue still, but not waiting.
            wait_for(
                lambda: running_on_default(client) == 1,
                10,
                what="the sleep job is in the worker's heartbeat",
            )
            assert oldest_waiting(client) == 0
            waiting = deployment.submit(client, "echo", {"message": "after the sleep"})
            assert wait_for(lambda: oldest_waiting(client) >= 0.5, 5, what="the echo waits")
            assert wait_finished(client, waiting)["status"] == "succeeded"
            assert oldest_waiting(client) == 0
