"""The fast job path with real processes: workers woken on enqueue (with a fallback poll for a
lost wake-up), and clients that wait on a job (`?wait`, the event stream) through any api."""

import asyncio
import json
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.catalog import DEFAULT_QUEUE
from shared.keys import job_record_key, namespaced, new_job_id
from shared.queue import QueuedJob
from shared.queue.redis import open_arq_pool
from shared.records import UNFINISHED_RECORD_TTL, JobRecord
from tests.conftest import settings_for_test
from tests.deployments import (
    CACHE_DB,
    REDIS_PORT,
    Deployment,
    redis_client,
    start_all,
    wait_finished,
)
from tests.processes import api, wait_for

pytestmark = pytest.mark.processes


def test_idle_worker_picks_up_a_new_job_at_once(deployment: Deployment) -> None:
    """With the fallback poll at 30 s, only the wake-up can explain a prompt pick-up."""
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1, WORKER_FALLBACK_POLL="30")
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=40))
        time.sleep(1.5)  # let the worker settle into waiting: the state under test
        started = time.monotonic()
        job_id = deployment.submit(client, "echo", {"message": "wake up"})
        record = client.get(f"/jobs/{job_id}", params={"wait": 30}).json()
        assert record["status"] == "succeeded"
        assert time.monotonic() - started < 10, "the idle worker waited for its fallback poll"


async def enqueue_without_wakeup(deployment: Deployment, job_id: str) -> None:
    """Record a job as the api does (a worker only replaces a job's record, never creates it),
    then queue it the way arq itself does, publishing no wake-up: a lost signal."""
    settings = settings_for_test(
        cache_backend="redis",
        redis_port=REDIS_PORT,
        cache_namespace=deployment.name,
    )
    record = JobRecord(id=job_id, name="echo", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    with redis_client(CACHE_DB) as cache:
        key = namespaced(deployment.name, job_record_key(job_id))
        cache.set(key, record.model_dump_json(), ex=UNFINISHED_RECORD_TTL)
    pool = await open_arq_pool(settings)
    try:
        job = QueuedJob.of(record, {"message": "no signal"}, DEFAULT_QUEUE)
        await pool.enqueue_job("echo", job.model_dump(mode="json"), _job_id=job_id)
    finally:
        await pool.aclose()


def test_job_whose_wakeup_was_lost_runs_after_the_fallback_poll(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1, WORKER_FALLBACK_POLL="0.5")
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=20))
        job_id = new_job_id()
        deployment.job_ids.append(job_id)
        asyncio.run(enqueue_without_wakeup(deployment, job_id))

        def succeeded() -> dict[str, Any] | None:
            response = client.get(f"/jobs/{job_id}")
            record: dict[str, Any] = response.json()
            return (
                record if response.status_code == 200 and record["status"] == "succeeded" else None
            )

        record = wait_for(succeeded, 15, what="the job runs without its wake-up")
        assert record["result"] == {"message": "no signal"}


def read_events(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_wait_and_event_stream_work_through_another_api_process(deployment: Deployment) -> None:
    """A job submitted through one api process is waited on through another."""
    with ExitStack() as stack:
        first = start_all(stack, deployment, workers=1)
        second = stack.enter_context(
            api(deployment.environment(), deployment.logs / "second-api.log")
        )
        submit = stack.enter_context(httpx.Client(base_url=first.url, timeout=30))
        other = stack.enter_context(httpx.Client(base_url=second.url, timeout=30))

        waited = deployment.submit(submit, "sleep", {"seconds": 0.5})
        started = time.monotonic()
        record = other.get(f"/jobs/{waited}", params={"wait": 25}).json()
        assert record["status"] == "succeeded"
        assert record["result"] == {"slept": 0.5}
        assert time.monotonic() - started < 20, "?wait did not return when the job ended"

        streamed = deployment.submit(submit, "sleep", {"seconds": 1.2})
        events = read_events(other, streamed)
        assert events[-1][0] == "succeeded"
        assert events[-1][1]["result"] == {"slept": 1.2}
        progress = [record["progress"]["current"] for name, record in events if name == "running"]
        assert len(progress) >= 2 and progress == sorted(progress)


def test_wait_returns_the_current_record_when_time_is_up(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1)
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        job_id = deployment.submit(client, "sleep", {"seconds": 3})
        started = time.monotonic()
        record = client.get(f"/jobs/{job_id}", params={"wait": 0.5}).json()
        assert time.monotonic() - started >= 0.5
        assert record["status"] in ("queued", "running")
        assert wait_finished(client, job_id)["status"] == "succeeded"


def test_many_waiting_clients_all_get_their_results(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=2)

        async def submit_and_wait(client: httpx.AsyncClient, number: int) -> dict[str, Any]:
            response = await client.post("/jobs/echo", json={"message": f"n{number}"})
            deployment.job_ids.append(response.json()["id"])
            waited = await client.get(f"/jobs/{response.json()['id']}", params={"wait": 20})
            record: dict[str, Any] = waited.json()
            return record

        async def run() -> list[dict[str, Any]]:
            limits = httpx.Limits(max_connections=50)
            async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=limits) as client:
                return await asyncio.gather(*(submit_and_wait(client, n) for n in range(200)))

        records = asyncio.run(run())
        assert [record["status"] for record in records] == ["succeeded"] * 200
        assert [record["result"]["message"] for record in records] == [f"n{n}" for n in range(200)]
