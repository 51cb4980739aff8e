"""The operator's view end to end, with real api, worker and redis-server processes: metrics
that add up across workers, JSON logs, worker endpoints and readiness through a Redis outage."""

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deployments import Deployment, delete_what_deployment_created, start_all, wait_finished
from tests.exposition import has_sample, total
from tests.processes import REPO_ROOT, api, child_environment, redis_server, wait_for

pytestmark = pytest.mark.processes

SLEEPS, ECHOES, FAILURES = 4, 3, 2


@dataclass(frozen=True)
class Run:
    """What two workers and an api did with a batch of jobs, and what they exposed."""

    submitted: dict[str, list[str]]
    api_metrics: str
    worker_metrics: list[str]
    targets: list[dict[str, Any]]
    health: dict[str, int]
    compose_check: int
    logs: dict[str, str]


def run_jobs_on_two_workers(deployment: Deployment) -> Run:
    submitted: dict[str, list[str]] = {"sleep": [], "echo": [], "fail": []}
    with ExitStack() as stack:
        # One job at a time per worker, and sleeps long enough that both workers take some.
        served = start_all(
            stack,
            deployment,
            workers=2,
            LOG_FORMAT="json",
            UVICORN_LOG_LEVEL="warning",
            WORKER_CONCURRENCY="1",
        )
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))
        for name, count, parameters in (
            ("sleep", SLEEPS, {"seconds": 0.4}),
            ("echo", ECHOES, {"message": "not for the logs"}),
            ("fail", FAILURES, {"message": "the disk is on fire"}),
        ):
            for _ in range(count):
                submitted[name].append(deployment.submit(client, name, parameters))
        for job_id in (job for ids in submitted.values() for job in ids):
            wait_finished(client, job_id, timeout=20)

        # The workers' counts reach their endpoints at once; the api lists both from their
        # heartbeats.
        targets = wait_for(
            lambda: (found := client.get("/metrics/targets").json()) and len(found) == 2 and found,
            10,
            what="both workers listed at /metrics/targets",
        )
        addresses = [target["targets"][0] for target in targets]
        worker_metrics = [httpx.get(f"http://{address}/metrics").text for address in addresses]
        health = {
            f"{address}{path}": httpx.get(f"http://{address}{path}").status_code
            for address in addresses
            for path in ("/health/live", "/health/ready", "/nothing")
        }
        compose_check = run_compose_healthcheck("worker", port=int(addresses[0].split(":")[1]))
        api_metrics = client.get("/metrics").text
    logs = {path.stem: path.read_text() for path in deployment.logs.glob("*.log")}
    return Run(submitted, api_metrics, worker_metrics, targets, health, compose_check, logs)


def run_compose_healthcheck(service: str, port: int) -> int:
    """docker-compose.yml's healthcheck command of `service`, pointed at `port`."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    command: list[str] = compose["services"][service]["healthcheck"]["test"]
    assert command[:2] == ["CMD", "python"]
    script = command[-1].replace(":9100/", f":{port}/").replace(":8000/", f":{port}/")
    return subprocess.run([sys.executable, *command[2:-1], script], timeout=10).returncode


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One batch of jobs on one deployment, which the tests below read from different sides."""
    deployment = Deployment(f"test-ops-{uuid.uuid4().hex}", tmp_path_factory.mktemp("logs"))
    try:
        yield run_jobs_on_two_workers(deployment)
    finally:
        delete_what_deployment_created(deployment)


def test_metrics_add_up_to_the_jobs_run_across_two_workers(run: Run) -> None:
    workers = run.worker_metrics
    for name, ids in run.submitted.items():
        count = len(ids)
        assert total(run.api_metrics, "jobcache_jobs_submitted_total", job_type=name) == count
        assert total(workers, "jobcache_jobs_started_total", job_type=name) == count
        finished = (
            "jobcache_jobs_failed_total" if name == "fail" else "jobcache_jobs_succeeded_total"
        )
        assert total(workers, finished, job_type=name) == count, name
        assert total(workers, "jobcache_job_duration_seconds_count", job_type=name) == count
        assert total(workers, "jobcache_job_queue_wait_seconds_count", job_type=name) == count
    assert total(workers, "jobcache_jobs_failed_total", job_type="echo") == 0
    assert total(workers, "jobcache_jobs_retried_total") == 0
    # Each worker ran some of them: the totals are sums over two processes.
    started = [total(text, "jobcache_jobs_started_total") for text in workers]
    assert all(count > 0 for count in started), started
    assert sum(started) == SLEEPS + ECHOES + FAILURES
    # The slowest sleep took its 0.4 s.
    assert total(workers, "jobcache_job_duration_seconds_sum", job_type="sleep") >= SLEEPS * 0.4
    # The api's view of the system: both workers, nothing left waiting.
    assert total(run.api_metrics, "jobcache_workers_alive") == 2
    assert total(run.api_metrics, "jobcache_queue_depth") == 0
    assert total(run.api_metrics, "jobcache_redis_errors_total") == 0


def test_each_worker_serves_its_metrics_and_health_where_the_api_lists_it(run: Run) -> None:
    for target in run.targets:
        assert target["labels"]["namespace"].startswith("test-ops-")
        assert target["labels"]["worker"]
    assert sorted(Counter(run.health.values()).items()) == [(200, 4), (404, 2)]
    assert run.compose_check == 0


def test_every_log_line_is_json_and_job_lines_carry_the_job_id(run: Run) -> None:
    events: list[dict[str, Any]] = []
    for name, text in run.logs.items():
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{name}.log line {number} is not JSON: {line!r}")
            assert {"time", "level", "logger", "message"} <= entry.keys(), line
            events.append(entry)
    for name, ids in run.submitted.items():
        outcome = "job.failed" if name == "fail" else "job.succeeded"
        for job_id in ids:
            about = [entry for entry in events if entry.get("job_id") == job_id]
            kinds = [entry.get("event") for entry in about]
            assert kinds.count("job.submitted") == 1, kinds
            assert kinds.count("job.started") == 1, kinds
            assert kinds.count(outcome) == 1, kinds
            [finished] = [entry for entry in about if entry.get("event") == outcome]
            assert finished["job_type"] == name
            assert finished["attempt"] == 1
            assert finished["duration"] >= (0.4 if name == "sleep" else 0)
    requests = [entry for entry in events if entry.get("event") == "request"]
    assert any(entry["route"] == "/jobs/{job_id}" for entry in requests)
    assert all("not for the logs" not in entry["message"] for entry in events)


def test_readiness_turns_unhealthy_when_redis_stops_and_healthy_when_it_returns(
    tmp_path: Path,
) -> None:
    with redis_server() as server:
        environment = child_environment(
            {"CACHE_BACKEND": "redis", "CACHE_NAMESPACE": "test-ready", **server.settings}
        )
        with (
            api(environment, tmp_path / "api.log") as served,
            httpx.Client(base_url=served.url, timeout=10) as client,
        ):
            assert client.get("/health/ready").status_code == 200

            server.stop()
            wait_for(
                lambda: client.get("/health/ready").status_code == 503,
                10,
                what="readiness fails without Redis",
            )
            assert client.get("/health/ready").json() == {"status": "unavailable", "redis": False}
            assert client.get("/health/live").status_code == 200
            # Metrics are still served, with the outage counted. The system's gauges, which
            # only Redis can give, are left out (never stale, never a NaN that would turn every
            # threshold alert on them false), and a gauge of their own says so.
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert total(metrics.text, "jobcache_redis_errors_total", operation="health") >= 1
            assert total(metrics.text, "jobcache_redis_errors_total", operation="metrics") >= 1
            assert total(metrics.text, "jobcache_system_view_up") == 0
            for gone in (
                "jobcache_workers_alive",
                "jobcache_queue_depth",
                "jobcache_queue_deferred",
            ):
                assert not has_sample(metrics.text, gone), gone
            assert "NaN" not in metrics.text

            server.start()
            wait_for(
                lambda: client.get("/health/ready").status_code == 200,
                15,
                what="readiness recovers with Redis",
            )
            assert client.get("/health/ready").json() == {"status": "ready", "redis": True}
            metrics = client.get("/metrics")
            assert total(metrics.text, "jobcache_system_view_up") == 1
            assert has_sample(metrics.text, "jobcache_workers_alive")
            assert total(metrics.text, "jobcache_queue_depth", queue="default") == 0
