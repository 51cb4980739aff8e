"""Nothing accepted is lost: workers killed or stopped mid-job, and Redis restarted under load,
with real processes. Every job that got a 202 ends with its result."""

import asyncio
import random
import re
import signal
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

from tests.deployments import Deployment, start_all
from tests.processes import Worker, api, child_environment, redis_server, wait_for, worker

pytestmark = pytest.mark.processes

STARTED = re.compile(r"job (\S+) \((\w+)\) started, attempt (\d+)")


# Idle connections are dropped by the client well before uvicorn drops them (after 5 s), so
# that no request goes out on a connection the server is closing.
LIMITS = httpx.Limits(max_connections=50, keepalive_expiry=1.0)


async def submit_many(url: str, jobs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """POST every job, 50 at a time; the ids of those accepted with 202. A POST whose answer
    was lost on the way is sent again, as a client would (its first copy may also run)."""
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=LIMITS) as client:
        gate = asyncio.Semaphore(50)

        async def submit(name: str, parameters: dict[str, Any]) -> str:
            async with gate:
                for _ in range(3):
                    try:
                        response = await client.post(f"/jobs/{name}", json=parameters)
                        break
                    except (httpx.ReadError, httpx.RemoteProtocolError):
                        continue
                else:
                    raise AssertionError(f"POST /jobs/{name} lost its answer three times")
                assert response.status_code == 202, response.text
                return str(response.json()["id"])

        return await asyncio.gather(*(submit(name, parameters) for name, parameters in jobs))


async def wait_all(url: str, job_ids: list[str], within: float = 60) -> list[dict[str, Any]]:
    """Each job's record once it has finished, read with ?wait as a client would."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=url, timeout=within + 10, limits=LIMITS) as client:
        gate = asyncio.Semaphore(50)

        async def finished(job_id: str) -> dict[str, Any]:
            async with gate:
                while True:
                    remaining = max(0.1, deadline - time.monotonic())
                    response = await client.get(f"/jobs/{job_id}", params={"wait": remaining})
                    record: dict[str, Any] = response.json()
                    if response.status_code == 200 and record["status"] in (
                        "succeeded",
                        "failed",
                    ):
                        return record
                    if time.monotonic() > deadline:
                        raise AssertionError(f"job {job_id} did not finish: {record}")
                    await asyncio.sleep(0.2)

        return await asyncio.gather(*(finished(job_id) for job_id in job_ids))


def arq_view(client: redis.Redis, queue: str, job_ids: list[str]) -> str:
    """What arq holds of each job still on the queue or held by a worker: for a failing test,
    whether a job that never finished was still queued, held (by whom) or gone."""
    lines = []
    for job_id in job_ids:
        score = client.zscore(queue, job_id)
        holder = client.get(in_progress_key_prefix + job_id)
        if score is None and holder is None:
            continue
        lines.append(
            f"{job_id}: queued at {score}, held by {holder} "
            f"for {client.pttl(in_progress_key_prefix + job_id)} ms more, "
            f"delivered {client.get(retry_key_prefix + job_id)} times, "
            f"job data {'kept' if client.exists(job_key_prefix + job_id) else 'gone'}"
        )
    return "--- arq's view of the unfinished jobs:\n" + ("\n".join(lines) or "(none)")


def starts_per_job(logs: list[Path]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for log in logs:
        for match in STARTED.finditer(log.read_text(errors="replace")):
            counts[match.group(1)] += 1
    return counts


def test_workers_killed_mid_job_lose_nothing(deployment: Deployment) -> None:
    """SIGKILL workers at random while 2,000 jobs run: every job succeeds, and jobs run twice
    at most as often as a killed worker could have been running them."""
    concurrency = 10
    settings = {
        "WORKER_CONCURRENCY": str(concurrency),
        "WORKER_LEASE": "1.5",
        "WORKER_FALLBACK_POLL": "0.5",
    }
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("sleep", {"seconds": 0.2}) if number % 10 == 0 else ("echo", {"message": f"m{number}"})
        for number in range(2000)
    ]
    kills = 0
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1, **settings)
        environment = deployment.environment(**settings)
        workers: list[Worker] = []
        for number in range(3):
            workers.append(
                stack.enter_context(
                    worker(environment, deployment.logs / f"spare-{number}.log", wait_ready=False)
                )
            )
        done = threading.Event()

        def kill_at_random() -> None:
            nonlocal kills
            rng = random.Random(20261126)
            while not done.wait(rng.uniform(0.8, 1.6)) and kills < 4:
                alive = [each for each in workers if each.process.poll() is None]
                if len(alive) < 2:
                    continue
                rng.choice(alive).process.send_signal(signal.SIGKILL)
                kills += 1

        # The worker start_all made keeps running; the three others are the targets.
        killer = threading.Thread(target=kill_at_random, daemon=True)
        killer.start()
        try:
            job_ids = asyncio.run(submit_many(served.url, jobs))
            deployment.job_ids.extend(job_ids)
            records = asyncio.run(wait_all(served.url, job_ids, within=90))
        finally:
            done.set()
            killer.join()
        logs = sorted(deployment.logs.glob("*.log"))

    assert kills >= 2, "the test killed too few workers to show anything"
    assert [record["status"] for record in records] == ["succeeded"] * len(jobs)
    for (name, parameters), record in zip(jobs, records, strict=True):
        expected = {"slept": 0.2} if name == "sleep" else {"message": parameters["message"]}
        assert record["result"] == expected
    starts = starts_per_job([log for log in logs if log.name != "api.log"])
    assert set(starts) == set(job_ids), "some job never started"
    duplicates = sum(count - 1 for count in starts.values())
    assert duplicates <= kills * concurrency
    for record in records:
        assert record["attempts"] >= starts[record["id"]], "a re-run is missing from attempts"


def running(client: httpx.Client, job_id: str) -> bool:
    return bool(client.get(f"/jobs/{job_id}").json()["status"] == "running")


def test_sigterm_lets_a_running_job_finish_within_the_grace_period(
    deployment: Deployment,
) -> None:
    environment = deployment.environment(WORKER_SHUTDOWN_GRACE="15")
    with ExitStack() as stack:
        served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        stopping = stack.enter_context(worker(environment, deployment.logs / "worker.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        job_id = deployment.submit(client, "sleep", {"seconds": 1.5})
        wait_for(lambda: running(client, job_id), 10, what="the job runs")

        stopping.process.send_signal(signal.SIGTERM)
        assert stopping.process.wait(20) == 0
        record = client.get(f"/jobs/{job_id}").json()
        assert (record["status"], record["attempts"]) == ("succeeded", 1)


def test_a_stopping_worker_takes_no_new_job_and_another_worker_runs_it(
    deployment: Deployment,
) -> None:
    """A job queued during a worker's grace period wakes it (it was waiting for work while its
    last job ran) but is left for a worker that is not stopping."""
    environment = deployment.environment(WORKER_SHUTDOWN_GRACE="15")
    with ExitStack() as stack:
        served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        # At DEBUG, arq logs when it stops taking jobs.
        stopping = stack.enter_context(
            worker({**environment, "LOG_LEVEL": "DEBUG"}, deployment.logs / "stopping.log")
        )
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        last_job = deployment.submit(client, "sleep", {"seconds": 2})
        wait_for(lambda: running(client, last_job), 10, what="the job runs")

        stopping.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: "allow_pick_jobs to `False`" in stopping.output(),
            10,
            what="the worker stops taking jobs",
        )
        new_job = deployment.submit(client, "echo", {"message": "after the stop"})
        assert stopping.process.wait(20) == 0
        assert client.get(f"/jobs/{new_job}").json()["status"] == "queued"

        stack.enter_context(worker(environment, deployment.logs / "next.log"))
        record = client.get(f"/jobs/{new_job}", params={"wait": 20}).json()
        assert (record["status"], record["attempts"]) == ("succeeded", 1)
        assert client.get(f"/jobs/{last_job}").json()["status"] == "succeeded"


def test_sigterm_past_the_grace_period_puts_the_job_back_for_another_worker(
    deployment: Deployment,
) -> None:
    environment = deployment.environment(WORKER_SHUTDOWN_GRACE="1", WORKER_FALLBACK_POLL="0.5")
    with ExitStack() as stack:
        served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        stopping = stack.enter_context(worker(environment, deployment.logs / "first.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        job_id = deployment.submit(client, "sleep", {"seconds": 3})
        wait_for(lambda: running(client, job_id), 10, what="the job runs")

        stopping.process.send_signal(signal.SIGTERM)
        stopping.process.wait(15)
        interrupted = client.get(f"/jobs/{job_id}").json()
        assert interrupted["status"] == "queued"
        assert "worker stopped" in interrupted["error"]

        stack.enter_context(worker(environment, deployment.logs / "second.log"))
        record = client.get(f"/jobs/{job_id}", params={"wait": 20}).json()
        assert (record["status"], record["attempts"]) == ("succeeded", 2)
        assert record["result"] == {"slept": 3}


def test_redis_restart_under_load_loses_no_accepted_job(tmp_path: Path) -> None:
    """While Redis is down the api answers 503 at once and workers wait; once it is back
    (its append-only file on) every job that got a 202 ends with its result."""
    namespace = "restart"
    with redis_server(appendonly=True) as server, ExitStack() as stack:
        environment = child_environment(
            {
                **server.settings,
                "CACHE_BACKEND": "redis",
                "CACHE_NAMESPACE": namespace,
                "CPU_WORKERS": "1",
                "WORKER_FALLBACK_POLL": "0.5",
            }
        )
        served = stack.enter_context(api(environment, tmp_path / "api.log"))
        workers = [
            stack.enter_context(worker(environment, tmp_path / f"worker-{number}.log"))
            for number in range(2)
        ]
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))

        def batch(first: int) -> list[tuple[str, dict[str, Any]]]:
            return [
                ("sleep", {"seconds": 0.3}) if n % 5 == 0 else ("echo", {"message": f"m{n}"})
                for n in range(first, first + 150)
            ]

        accepted = asyncio.run(submit_many(served.url, batch(0)))
        server.stop()

        started = time.monotonic()
        refused = client.post("/jobs/echo", json={"message": "while down"})
        assert time.monotonic() - started < 5, "the api hung while Redis was down"
        assert refused.status_code == 503
        assert "Redis" in refused.json()["detail"]
        assert client.get("/health").status_code == 503

        time.sleep(2)  # the outage under test: workers must ride it out
        assert all(each.process.poll() is None for each in workers), "a worker exited"
        server.start()

        def accepts() -> bool:
            return client.post("/jobs/echo", json={"message": "back"}).status_code == 202

        wait_for(accepts, 15, what="the api accepts jobs again")
        accepted += asyncio.run(submit_many(served.url, batch(150)))

        try:
            records = asyncio.run(wait_all(served.url, accepted, within=60))
        except AssertionError as error:
            error.add_note(arq_view(server.client(), f"{namespace}:queue:default", accepted))
            raise
        assert [record["status"] for record in records] == ["succeeded"] * 300
