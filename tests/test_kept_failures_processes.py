"""Failed jobs kept and run again, and deadlines, on Redis with real processes (an api and two
workers): a failed job is kept with its parameters past CACHE_TTL, runs again under its id
(alone, or with every kept failure of its queue) and succeeds; a job not started by its
deadline ends `expired` on whichever worker takes it, and runs again too."""

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from shared.keys import Keys
from tests.conftest import write_module
from tests.deployments import (
    CACHE_DB,
    QUEUE_DB,
    Deployment,
    get_record,
    redis_client,
    start_all,
    wait_finished,
)
from tests.processes import wait_for
from tests.test_kept_failures import FLAKY_JOBS

pytestmark = pytest.mark.processes


def test_failed_jobs_are_kept_and_run_again_on_real_workers(
    job_directory: Path, deployment: Deployment, tmp_path: Path
) -> None:
    module = write_module(job_directory, FLAKY_JOBS)
    with ExitStack() as stack:
        served = start_all(
            stack,
            deployment,
            workers=2,
            JOBCACHE_JOBS=f"shared.builtin_jobs,{module}",
            PYTHONPATH=str(job_directory),
            CACHE_TTL="2",
            FAILED_JOB_TTL="3600",
            WORKER_CONCURRENCY="1",
        )
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        ids = [
            deployment.submit(client, "flaky", {"path": str(tmp_path / f"marker-{number}")})
            for number in range(4)
        ]
        for job_id in ids:
            record = wait_finished(client, job_id, timeout=30)
            assert record["status"] == "failed", record
            assert record["error"] == "the partner's API was down"

        keys = Keys(deployment.name)
        with redis_client(QUEUE_DB) as queue, redis_client(CACHE_DB) as cache:
            assert queue.zcard(keys.failed_jobs("flaky")) == 4
            assert queue.zcard(keys.failed_jobs_of_type("flaky", "flaky")) == 4
            kept_ttl = queue.ttl(keys.failed_job("flaky", ids[0]))
            assert 3500 < kept_ttl <= 3600, "kept FAILED_JOB_TTL"
            record_ttl = cache.ttl(keys.job_record(ids[0]))
            assert 3500 < record_ttl <= 3600, "its record too, whatever CACHE_TTL says"

        retried = client.post(f"/jobs/{ids[0]}/retry")
        assert retried.status_code == 202, retried.text
        assert retried.json()["status"] == "queued"
        done = wait_finished(client, ids[0], timeout=30)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1
        assert done["previous_errors"] == ["the partner's API was down"]
        assert client.post(f"/jobs/{ids[0]}/retry").status_code == 409

        bulk = client.post("/jobs/retry", params={"queue": "flaky"})
        assert bulk.status_code == 202, bulk.text
        assert bulk.json()["retried"] == 3
        for job_id in ids[1:]:
            record = wait_finished(client, job_id, timeout=30)
            assert record["status"] == "succeeded", record
        with redis_client(QUEUE_DB) as queue:
            assert queue.zcard(keys.failed_jobs("flaky")) == 0, "run again, none is kept"
            assert not queue.exists(keys.failed_job("flaky", ids[1]))

        # A running job is not a kept failure.
        sleeper = deployment.submit(client, "sleep", {"seconds": 3})
        wait_for(
            lambda: get_record(client, sleeper)["status"] == "running",
            30,
            what="the sleep job runs",
        )
        running = client.post(f"/jobs/{sleeper}/retry")
        assert running.status_code == 409
        assert "running" in running.json()["detail"]
        wait_finished(client, sleeper, timeout=30)


def test_a_job_past_its_deadline_expires_on_real_workers(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=2, WORKER_CONCURRENCY="1")
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        # Both workers busy for two seconds: the echo's turn comes after its deadline.
        blockers = [deployment.submit(client, "sleep", {"seconds": 2}) for _ in range(2)]
        for blocker in blockers:
            wait_for(
                lambda blocker=blocker: get_record(client, blocker)["status"] == "running",
                30,
                what="both workers are busy",
            )
        response = client.post(
            "/jobs/echo", params={"expires_in": "0.5"}, json={"message": "report due"}
        )
        assert response.status_code == 202, response.text
        late = response.json()["id"]
        deployment.job_ids.append(late)
        timely = deployment.submit(client, "echo", {"message": "no deadline"})

        record = wait_finished(client, late, timeout=30)
        assert record["status"] == "expired", record
        assert record["started_at"] is None
        assert wait_finished(client, timeout=30, job_id=timely)["status"] == "succeeded"

        again = client.post(f"/jobs/{late}/retry")
        assert again.status_code == 202, again.text
        record = wait_finished(client, late, timeout=30)
        assert record["status"] == "succeeded", record
        assert record["result"] == {"message": "report due"}
