"""Paused queues (POST /queues/{name}/pause and /resume, GET /queues): a paused queue takes
jobs but starts none until it is resumed, in both modes and across worker restarts."""

import asyncio
import time
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tests.conftest import client_for, finished_record, settings_in
from tests.deployments import Deployment, start_all, wait_finished
from tests.processes import worker

HELD_SECONDS = 1.5
"""How long a paused queue's job is watched not to start (a worker takes a job in ms)."""


def queue_named(queues: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(queue for queue in queues if queue["name"] == name)


async def test_a_paused_queue_takes_jobs_and_starts_them_once_resumed(namespace: str) -> None:
    async with client_for(settings_in("local", namespace)) as client:
        paused = await client.post("/queues/default/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True

        submitted = await client.post("/jobs/echo", json={"message": "held"})
        assert submitted.status_code == 202
        job_id = submitted.json()["id"]
        other = await client.post("/jobs/primes", json={"limit": 100})  # on the cpu queue
        assert (await finished_record(client, other.json()["id"]))["status"] == "succeeded"
        # Watched for a while: the embedded worker, free, would start it within milliseconds.
        deadline = time.monotonic() + HELD_SECONDS
        while time.monotonic() < deadline:
            assert (await client.get(f"/jobs/{job_id}")).json()["status"] == "queued"
            await asyncio.sleep(0.05)
        queues = (await client.get("/queues")).json()
        assert queue_named(queues, "default")["paused"] is True
        assert queue_named(queues, "default")["waiting"] == 1
        assert queue_named(queues, "cpu")["paused"] is False

        resumed = await client.post("/queues/default/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        record = await finished_record(client, job_id)
        assert record["status"] == "succeeded"
        assert record["result"] == {"message": "held"}


async def test_pausing_an_unknown_queue_is_a_404_naming_it(namespace: str) -> None:
    async with client_for(settings_in("local", namespace)) as client:
        response = await client.post("/queues/nope/pause")
        assert response.status_code == 404
        assert "'nope'" in response.json()["detail"]
        assert "default" in response.json()["detail"]


async def test_with_api_keys_only_an_admin_key_steers_queues(namespace: str) -> None:
    settings = settings_in("local", namespace, api_keys="user-key", admin_api_keys="admin-key")
    async with client_for(settings) as client:
        for method, path in (
            ("GET", "/queues"),
            ("POST", "/queues/default/pause"),
            ("POST", "/queues/default/resume"),
        ):
            anonymous = await client.request(method, path)
            assert anonymous.status_code == 401, (path, anonymous.text)
            ordinary = await client.request(
                method, path, headers={"Authorization": "Bearer user-key"}
            )
            assert ordinary.status_code == 403, (path, ordinary.text)
            admin = await client.request(
                method, path, headers={"Authorization": "Bearer admin-key"}
            )
            assert admin.status_code == 200, (path, admin.text)


@pytest.mark.processes
def test_a_paused_queue_holds_for_every_worker_and_across_a_restart(
    deployment: Deployment,
) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=2)
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))
        assert client.post("/queues/default/pause").json()["paused"] is True

        held = [deployment.submit(client, "echo", {"message": f"held {n}"}) for n in range(5)]
        # A worker started now reads the paused state from Redis, as one after a restart does.
        environment = deployment.environment()
        stack.enter_context(worker(environment, deployment.logs / "worker-late.log"))
        # The cpu queue is not paused: its job runs meanwhile.
        other = deployment.submit(client, "primes", {"limit": 100})
        assert wait_finished(client, other)["status"] == "succeeded"
        deadline = time.monotonic() + HELD_SECONDS
        while time.monotonic() < deadline:
            statuses = {client.get(f"/jobs/{job_id}").json()["status"] for job_id in held}
            assert statuses == {"queued"}, statuses
            time.sleep(0.1)
        assert queue_named(client.get("/queues").json(), "default")["waiting"] == len(held)

        assert client.post("/queues/default/resume").json()["paused"] is False
        for job_id in held:
            record = wait_finished(client, job_id, timeout=10)
            assert record["status"] == "succeeded", record
