"""Failed jobs kept and run again, and deadlines, in-process: a job that ends failed,
cancelled or expired keeps its record and its parameters past CACHE_TTL and runs again under
its id with POST /jobs/{id}/retry (its owner) or POST /jobs/retry (an admin, a whole queue or
job type); a job not started by its `?expires_in=` deadline ends `expired`."""

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    client_for,
    eventually,
    finished_record,
    settings_in,
    write_module,
)

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

ADMIN = "admin-5d0b8c1e9f7a4e2d8c6b4a2f0e8d6c4b"
ALICE = "alice-0c1f6d3b9a8e47f2b5d4c3a2e1f0a9b8"
BOB = "bob-7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b"

FLAKY_JOBS = '''
"""A job type that fails on its first run and succeeds on the next: the marker file it makes
remembers the first."""

from pathlib import Path

from pydantic import BaseModel

from shared.errors import JobFailedError
from shared.jobs import JobContext, job


class Marker(BaseModel):
    path: str


class Done(BaseModel):
    attempt: int


@job(summary="Fail once, then succeed", queue="flaky")
async def flaky(parameters: Marker, context: JobContext) -> Done:
    marker = Path(parameters.path)
    if not marker.exists():
        marker.write_text("failed once")
        raise JobFailedError("the partner's API was down")
    return Done(attempt=context.attempt)
'''


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def flaky_settings(job_directory: Path, namespace: str, **values: Any) -> Any:
    module = write_module(job_directory, FLAKY_JOBS)
    return settings_in("local", namespace, jobcache_jobs=f"shared.builtin_jobs,{module}", **values)


async def test_a_failed_job_outlives_cache_ttl_and_runs_again_under_its_id(
    job_directory: Path, namespace: str, tmp_path: Path
) -> None:
    settings = flaky_settings(job_directory, namespace, cache_ttl=1)
    async with client_for(settings) as client:
        marker = tmp_path / "marker"
        submitted = await client.post("/jobs/flaky", json={"path": str(marker)})
        job_id = submitted.json()["id"]
        failed = await finished_record(client, job_id, within=30)
        assert failed["status"] == "failed"
        assert failed["error"] == "the partner's API was down"
        assert "parameters" not in failed, "the kept parameters are private"
        # Well past CACHE_TTL=1: a kept failure stays FAILED_JOB_TTL.
        await eventually(lambda: _still_there_after(client, job_id, 2.5), within=15)

        retried = await client.post(f"/jobs/{job_id}/retry")
        assert retried.status_code == 202, retried.text
        again = retried.json()
        assert again["id"] == job_id
        assert again["status"] == "queued"
        assert again["attempts"] == 0
        assert again["error"] is None
        assert again["previous_errors"] == ["the partner's API was down"]
        assert retried.headers["location"] == f"/jobs/{job_id}"

        done = await finished_record(client, job_id, within=30)
        assert done["status"] == "succeeded", done
        assert done["result"] == {"attempt": 1}, "its attempts start over"
        assert done["previous_errors"] == ["the partner's API was down"]

        twice = await client.post(f"/jobs/{job_id}/retry")
        assert twice.status_code == 409
        assert "succeeded" in twice.json()["detail"]


async def _still_there_after(client: httpx.AsyncClient, job_id: str, seconds: float) -> bool:
    import asyncio

    await asyncio.sleep(seconds)  # the wait is the point: CACHE_TTL must have passed
    response = await client.get(f"/jobs/{job_id}")
    return response.status_code == 200 and response.json()["status"] == "failed"


async def test_a_job_not_started_by_its_deadline_expires_and_can_run_again(
    namespace: str,
) -> None:
    settings = settings_in("local", namespace, worker_concurrency=1)
    async with client_for(settings) as client:
        blocker = await client.post("/jobs/sleep", json={"seconds": 1.5})
        late = await client.post(
            "/jobs/echo", params={"expires_in": 0.2}, json={"message": "too late"}
        )
        assert late.status_code == 202, late.text
        assert late.json()["expires_at"] is not None
        job_id = late.json()["id"]
        record = await eventually(lambda: _status_is(client, job_id, "expired"), within=30)
        assert record["started_at"] is None, "it never ran"
        assert record["attempts"] == 0
        assert "deadline" in record["error"]
        await finished_record(client, blocker.json()["id"], within=30)

        listed = await client.get("/jobs", params={"status": "expired"})
        assert [job["id"] for job in listed.json()["jobs"]] == [job_id]

        retried = await client.post(f"/jobs/{job_id}/retry")
        assert retried.status_code == 202, retried.text
        assert retried.json()["expires_at"] is None, "run again, it has no deadline"
        done = await finished_record(client, job_id, within=30)
        assert done["status"] == "succeeded"
        assert done["result"] == {"message": "too late"}
        assert done["previous_errors"] == [record["error"]]


async def _status_is(client: httpx.AsyncClient, job_id: str, status: str) -> Any:
    record = (await client.get(f"/jobs/{job_id}")).json()
    return record if record["status"] == status else None


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "86401"])
async def test_a_deadline_that_is_not_a_positive_number_is_422(
    mode: str, namespace: str, value: str
) -> None:
    async with client_for(settings_in(mode, namespace)) as client:
        for path, body in (
            ("/jobs/echo", {"message": "hi"}),
            ("/jobs/echo/batch", [{"message": "hi"}]),
        ):
            response = await client.post(path, params={"expires_in": value}, json=body)
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == ["query", "expires_in"]


async def test_retry_answers_404_for_unknown_jobs_and_409_for_unfinished_ones(
    mode: str, namespace: str
) -> None:
    async with client_for(settings_in(mode, namespace, worker_concurrency=1)) as client:
        unknown = await client.post(f"/jobs/{'Z' * 22}/retry")
        assert unknown.status_code == 404
        assert "no job with id" in unknown.json()["detail"]
        # In the redis mode nothing runs it (no worker); in the local mode it sleeps a while.
        waiting = await client.post("/jobs/sleep", json={"seconds": 3})
        job_id = waiting.json()["id"]
        busy = await client.post(f"/jobs/{job_id}/retry")
        assert busy.status_code == 409
        assert "cannot be run again" in busy.json()["detail"]
        assert busy.json()["detail"].count("queued") + busy.json()["detail"].count("running")

        cancelled = await client.post(f"/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200


async def test_bulk_retry_names_an_unknown_queue_or_job_type(mode: str, namespace: str) -> None:
    async with client_for(settings_in(mode, namespace)) as client:
        queue = await client.post("/jobs/retry", params={"queue": "nightly"})
        assert queue.status_code == 404
        assert "nightly" in queue.json()["detail"]
        assert queue.json()["known_queues"] == ["default", "cpu"]
        name = await client.post("/jobs/retry", params={"name": "nightly_report"})
        assert name.status_code == 404
        assert "nightly_report" in name.json()["detail"]
        neither = await client.post("/jobs/retry")
        assert neither.status_code == 422
        since = await client.post("/jobs/retry", params={"queue": "default", "since": "yesterday"})
        assert since.status_code == 422
        assert since.json()["detail"][0]["loc"] == ["query", "since"]
        nothing = await client.post("/jobs/retry", params={"queue": "default"})
        assert nothing.status_code == 202
        assert nothing.json()["retried"] == 0


async def test_only_the_owner_retries_a_job_and_only_an_admin_a_queue(
    job_directory: Path, namespace: str, tmp_path: Path
) -> None:
    settings = flaky_settings(
        job_directory, namespace, api_keys=f"{ALICE},{BOB}", admin_api_keys=ADMIN
    )
    async with client_for(settings) as client:
        ids = []
        for number in range(3):
            submitted = await client.post(
                "/jobs/flaky", json={"path": str(tmp_path / f"m{number}")}, headers=bearer(ALICE)
            )
            ids.append(submitted.json()["id"])
        for job_id in ids:
            record = await client.get(f"/jobs/{job_id}", params={"wait": 20}, headers=bearer(ALICE))
            assert record.json()["status"] == "failed"

        bob = await client.post(f"/jobs/{ids[0]}/retry", headers=bearer(BOB))
        assert bob.status_code == 404, "another key's job is as unknown as one that never was"
        none = await client.post(f"/jobs/{ids[0]}/retry")
        assert none.status_code == 401

        for key, status in ((None, 401), (ALICE, 403)):
            headers = bearer(key) if key else {}
            refused = await client.post("/jobs/retry", params={"queue": "flaky"}, headers=headers)
            assert refused.status_code == status, refused.text

        mine = await client.post(f"/jobs/{ids[0]}/retry", headers=bearer(ALICE))
        assert mine.status_code == 202
        await client.get(f"/jobs/{ids[0]}", params={"wait": 20}, headers=bearer(ALICE))

        bulk = await client.post("/jobs/retry", params={"name": "flaky"}, headers=bearer(ADMIN))
        assert bulk.status_code == 202, bulk.text
        assert bulk.json()["retried"] == 2, "the one run again already is not kept any more"
        for job_id in ids:
            record = await client.get(f"/jobs/{job_id}", params={"wait": 20}, headers=bearer(ALICE))
            assert record.json()["status"] == "succeeded", record.json()
        again = await client.post("/jobs/retry", params={"queue": "flaky"}, headers=bearer(ADMIN))
        assert again.json()["retried"] == 0
