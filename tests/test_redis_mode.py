"""The redis mode end to end: a real api and real workers, driven over HTTP, on a real Redis.

Each test runs under a namespace of its own (`test-<hex>`), so it only ever sees, and at the
end deletes, the keys it created; several runs can share one Redis.
"""

import json
import time
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import redis

from tests.deployments import (
    CACHE_DB,
    QUEUE_DB,
    REDIS_HOST,
    REDIS_PORT,
    Deployment,
    get_record,
    keys_matching,
    redis_client,
    start_all,
    started_lines,
    wait_finished,
)
from tests.processes import api, wait_for

pytestmark = pytest.mark.processes


def test_every_job_type_runs_end_to_end(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1)
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))

        message = "héllo, wörld ✓ — 42"
        echo = deployment.submit(client, "echo", {"message": message})
        text = "The cat and the hat\nthe end"
        stats = deployment.submit(client, "text_stats", {"text": text, "top": 2})
        primes = deployment.submit(client, "primes", {"limit": 100})
        fail = deployment.submit(client, "fail", {"message": "the disk is on fire"})
        sleep = deployment.submit(client, "sleep", {"seconds": 1.5})

        def running_with_progress() -> dict[str, Any] | None:
            record = get_record(client, sleep)
            progress = record["progress"]
            if record["status"] == "running" and progress and progress["current"] > 0:
                return record
            assert record["status"] in ("queued", "running"), record
            return None

        running = wait_for(running_with_progress, 10, what="sleep job reports progress")
        assert running["finished_at"] is None
        assert running["started_at"] is not None
        assert running["progress"]["total"] == 1.5
        assert 0 < running["progress"]["current"] < 1.5

        record = wait_finished(client, echo)
        assert (record["status"], record["result"], record["error"]) == (
            "succeeded",
            {"message": message},
            None,
        )
        assert record["attempts"] == 1

        record = wait_finished(client, stats)
        assert record["status"] == "succeeded", record
        assert record["result"] == {
            "characters": len(text),
            "words": 7,
            "lines": 2,
            "unique_words": 5,
            "most_common": [{"word": "the", "count": 3}, {"word": "cat", "count": 1}],
        }

        record = wait_finished(client, primes)
        assert record["status"] == "succeeded", record
        assert record["result"] == {"limit": 100, "count": 25, "largest": 97}

        record = wait_finished(client, fail)
        assert record["status"] == "failed"
        assert record["error"] == "the disk is on fire"
        assert record["result"] is None
        assert record["attempts"] == 1
        assert record["finished_at"] is not None

        record = wait_finished(client, sleep)
        assert record["status"] == "succeeded", record
        assert record["result"] == {"slept": 1.5}
        assert record["progress"]["current"] == 1.5


def test_two_workers_share_one_queue_and_run_each_job_once(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=2, WORKER_CONCURRENCY="2")
        workers = [deployment.logs / "worker-0.log", deployment.logs / "worker-1.log"]
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))

        job_ids = [
            deployment.submit(client, "sleep", {"seconds": 0.1})
            if number % 3 == 0
            else deployment.submit(client, "echo", {"message": f"job {number}"})
            for number in range(60)
        ]
        deadline = time.monotonic() + 30
        for job_id in job_ids:
            record = wait_finished(client, job_id, timeout=max(1, deadline - time.monotonic()))
            assert record["status"] == "succeeded", record
            assert record["attempts"] == 1, record

        logs = [path.read_text() for path in workers]
        for job_id in job_ids:
            starts = [len(started_lines(log, job_id)) for log in logs]
            assert sorted(starts) == [0, 1], f"job {job_id} started {starts} times per worker"
        ran = [sum(1 for job_id in job_ids if started_lines(log, job_id)) for log in logs]
        assert min(ran) >= 1, f"jobs run per worker: {ran}"


def test_record_is_readable_json_under_namespace_with_ttl(deployment: Deployment) -> None:
    cache_ttl = 30
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1, CACHE_TTL=str(cache_ttl))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))
        job_id = deployment.submit(client, "echo", {"message": "stored as JSON"})
        wait_finished(client, job_id)

        key = f"{deployment.name}:job:{job_id}"
        assert keys_matching(CACHE_DB, f"*{job_id}*") == [key]
        cache = stack.enter_context(redis_client(CACHE_DB))
        stored = json.loads(cache.get(key) or "null")
        assert stored["id"] == job_id
        assert stored["status"] == "succeeded"
        assert stored["result"] == {"message": "stored as JSON"}
        assert 0 < cache.ttl(key) <= cache_ttl


def test_queued_job_is_json_not_pickle(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = stack.enter_context(api(deployment.environment(), deployment.logs / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))
        job_id = deployment.submit(client, "echo", {"message": "waits in the queue"})

        queue = stack.enter_context(
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=QUEUE_DB, decode_responses=False)
        )
        assert queue.zscore(f"{deployment.name}:queue:default", job_id) is not None
        stored = queue.get(f"arq:job:{job_id}")
        assert stored is not None
        assert not stored.startswith(b"\x80"), f"the queued job is pickled: {stored[:40]!r}"
        envelope = json.loads(stored)
        assert envelope["f"] == "echo"
        # arq's one argument is the queued job's message (shared/queue/base.py), named fields.
        [message] = envelope["a"]
        assert message["id"] == job_id
        assert message["parameters"] == {"message": "waits in the queue"}
        cache = stack.enter_context(redis_client(CACHE_DB))
        assert json.loads(cache.get(f"{deployment.name}:job:{job_id}") or "null")["status"] == (
            "queued"
        )


def test_finished_job_is_gone_after_cache_ttl(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1, CACHE_TTL="2")
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))
        job_id = deployment.submit(client, "echo", {"message": "short-lived"})
        assert wait_finished(client, job_id)["status"] == "succeeded"
        finished = time.monotonic()

        wait_for(
            lambda: client.get(f"/jobs/{job_id}").status_code == 404,
            timeout=8,
            interval=0.1,
            what="record expires",
        )
        assert time.monotonic() - finished > 0.5, "the record vanished before its TTL"
        assert "expired" in client.get(f"/jobs/{job_id}").json()["detail"]
        assert keys_matching(CACHE_DB, f"*{job_id}*") == []


def test_namespaces_keep_deployments_apart(new_deployment: Any) -> None:
    first: Deployment = new_deployment()
    second: Deployment = new_deployment()
    with ExitStack() as stack:
        apis = {}
        for deployment in (first, second):
            served = start_all(stack, deployment, workers=1)
            apis[deployment.name] = stack.enter_context(
                httpx.Client(base_url=served.url, timeout=5)
            )
        own = {
            deployment.name: deployment.submit(apis[deployment.name], "echo", {"message": "mine"})
            for deployment in (first, second)
        }
        for deployment in (first, second):
            record = wait_finished(apis[deployment.name], own[deployment.name])
            assert record["status"] == "succeeded", record

        assert apis[second.name].get(f"/jobs/{own[first.name]}").status_code == 404
        assert apis[first.name].get(f"/jobs/{own[second.name]}").status_code == 404
        for deployment in (first, second):
            job_id = own[deployment.name]
            for db in (QUEUE_DB, CACHE_DB):
                for key in keys_matching(db, f"*{job_id}*"):
                    assert key.startswith(f"{deployment.name}:"), f"db {db}: {key}"
            other_id = own[second.name if deployment is first else first.name]
            assert f"{deployment.name}:job:{job_id}" in keys_matching(
                CACHE_DB, f"{deployment.name}:*"
            )
            for db in (QUEUE_DB, CACHE_DB):
                assert not [k for k in keys_matching(db, f"{deployment.name}:*") if other_id in k]
            worker_log = (deployment.logs / "worker-0.log").read_text()
            other = own[second.name if deployment is first else first.name]
            assert started_lines(worker_log, job_id)
            assert not started_lines(worker_log, other)
