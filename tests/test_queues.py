"""Queues of their own: a job type declared with `@job(queue=...)` waits on its queue for a
worker that serves it (WORKER_QUEUES); a worker serving several queues starves none of them;
retries, cancels, a dead worker's jobs and the operator's view keep to each job's queue."""

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import Retry
from arq.worker import func

from shared.keys import Keys
from tests.conftest import (
    REDIS_HOST,
    REDIS_PORT,
    client_for,
    ended_in,
    finished_record,
    settings_for_test,
    write_module,
)
from tests.deployments import QUEUE_DB, Deployment, redis_client, wait_finished
from tests.exposition import parse
from tests.processes import api, run_until_exit, wait_for, worker, worker_command
from worker.arq_internals import ClaimingWorker, QueueWaitingRedis

LEASE_SECONDS = 2.0


@pytest.fixture
async def two_queues(namespace: str) -> AsyncIterator[tuple[QueueWaitingRedis, str, str]]:
    """A worker's pool serving the default queue, then `cpu`; the keys are deleted after."""
    keys = Keys(namespace)
    default, cpu = keys.queue("default"), keys.queue("cpu")
    pool = QueueWaitingRedis(
        queues=[default, cpu], fallback_poll=0.1, host=REDIS_HOST, port=REDIS_PORT,
        default_queue_name=default,
    )  # fmt: skip
    yield pool, default, cpu
    await pool.delete(default, cpu)
    await pool.aclose()


def claiming_worker(pool: QueueWaitingRedis, queue: str, functions: list[Any]) -> ClaimingWorker:
    return ClaimingWorker(
        worker_id="worker-a", lease_seconds=LEASE_SECONDS, functions=functions,
        redis_pool=pool, queue_name=queue, poll_delay=0.001, keep_result=0, max_jobs=1,
        handle_signals=False,
    )  # fmt: skip


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq's
async def test_a_worker_serving_two_queues_starves_neither(
    two_queues: tuple[QueueWaitingRedis, str, str],
) -> None:
    """A backlog on one queue does not hold up a job of the other: with one slot, the `cpu` job
    queued after twenty default jobs starts among the first ones, not after them all."""
    pool, default, cpu = two_queues
    started: list[str] = []

    async def note(ctx: dict[str, Any], label: str) -> None:
        started.append(label)
        await asyncio.sleep(0.01)

    for number in range(20):
        await pool.enqueue_job("note", f"default-{number}", _queue_name=default)
    await pool.enqueue_job("note", "cpu", _queue_name=cpu)
    worker = claiming_worker(pool, default, [func(note, name="note")])
    running = asyncio.create_task(worker.async_run())
    try:
        deadline = time.monotonic() + 20
        # Until every job has ended: a job ends by leaving its queue.
        while len(started) < 21 or await pool.zcard(default) or await pool.zcard(cpu):
            assert time.monotonic() < deadline, f"only {started} ran"
            await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    assert started.index("cpu") <= 2, started
    assert sorted(started) == sorted(["cpu", *(f"default-{n}" for n in range(20))])


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq's
async def test_a_retry_goes_back_on_the_queue_the_job_came_from(
    two_queues: tuple[QueueWaitingRedis, str, str],
) -> None:
    """arq puts a retry back on its worker's queue; here, on the job's own (`cpu`, the second
    queue this worker serves), after its delay, and nowhere else."""
    pool, default, cpu = two_queues
    tries: list[float] = []
    during_delay: list[tuple[float | None, float | None]] = []

    async def flaky(ctx: dict[str, Any]) -> None:
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise Retry(defer=0.5)

    job = await pool.enqueue_job("flaky", _queue_name=cpu)
    assert job is not None
    worker = claiming_worker(pool, default, [func(flaky, name="flaky", max_tries=3)])
    running = asyncio.create_task(worker.async_run())
    try:
        deadline = time.monotonic() + 15
        while len(tries) < 2 or not await ended_in(worker, job.job_id):
            assert time.monotonic() < deadline, f"tried {len(tries)} times"
            if len(tries) == 1 and not during_delay and time.monotonic() - tries[0] > 0.2:
                during_delay.append(
                    (await pool.zscore(cpu, job.job_id), await pool.zscore(default, job.job_id))
                )
            await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    assert tries[1] - tries[0] >= 0.45, "the retry ran after its delay"
    [(on_cpu, on_default)] = during_delay
    assert on_cpu is not None, "the retry waits on the job's own queue"
    assert on_default is None, "nothing is put on another queue"
    assert await pool.zscore(cpu, job.job_id) is None, "the job left its queue as it ended"


async def test_the_local_mode_runs_every_queue_and_shows_each(namespace: str) -> None:
    settings = settings_for_test(cache_namespace=namespace, cpu_workers=1)
    async with client_for(settings) as client:
        submitted = await client.post("/jobs/primes", json={"limit": 100})
        assert submitted.status_code == 202, submitted.text
        record = await finished_record(client, submitted.json()["id"], within=30)
        assert record["status"] == "succeeded", record
        state = (await client.get("/dashboard/state")).json()
        assert [queue["name"] for queue in state["queues"]] == ["default", "cpu"]
        assert all(queue["workers"] == 1 for queue in state["queues"])
        [embedded] = state["workers"]
        assert embedded["queues"] == ["default", "cpu"]


QUEUED_JOBS = '''
"""A quick job type on the default queue and a slow one on the `cpu` queue."""

import asyncio

from pydantic import BaseModel

from shared.jobs import JobContext, job


class Nap(BaseModel):
    seconds: float


class Napped(BaseModel):
    seconds: float
    attempt: int


@job(queue="cpu", timeout=30)
async def nap(parameters: Nap, context: JobContext) -> Napped:
    await context.report_progress(0, 1, "napping")
    await asyncio.sleep(parameters.seconds)
    return Napped(seconds=parameters.seconds, attempt=context.attempt)


@job()
async def quick(parameters: Nap, context: JobContext) -> Napped:
    return Napped(seconds=0, attempt=context.attempt)
'''


def dashboard_queues(client: httpx.Client) -> dict[str, dict[str, Any]]:
    state = client.get("/dashboard/state").json()
    return {queue["name"]: queue for queue in state["queues"]}


def queue_depth(client: httpx.Client, queue: str) -> float:
    [depth] = [
        sample.value
        for sample in parse(client.get("/metrics").text)
        if sample.name == "jobcache_queue_depth" and sample.labels == {"queue": queue}
    ]
    return depth


@pytest.mark.processes
def test_a_job_waits_on_its_queue_until_a_worker_serves_it(
    job_directory: Path,
    deployment: Deployment,
) -> None:
    module = write_module(job_directory, QUEUED_JOBS)
    common = {"JOBCACHE_JOBS": module, "PYTHONPATH": str(job_directory), "WORKER_LEASE": "1"}
    environment = deployment.environment(**common)
    queue_key = Keys(deployment.name).queue("cpu")
    with ExitStack() as stack:
        stack.enter_context(
            worker(
                deployment.environment(**common, WORKER_QUEUES="default"),
                deployment.logs / "worker-default.log",
                name="worker-default",
            )
        )
        served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=10))
        waiting = deployment.submit(client, "nap", {"seconds": 0.1})
        cancelled = deployment.submit(client, "nap", {"seconds": 0.1})
        quick = deployment.submit(client, "quick", {"seconds": 0})
        assert wait_finished(client, quick)["status"] == "succeeded"

        # The default queue's worker is alive and idle; the cpu jobs stay queued, and the
        # operator sees a queue that no worker serves.
        assert client.get(f"/jobs/{waiting}").json()["status"] == "queued"
        queues = wait_for(
            lambda: (found := dashboard_queues(client))["default"]["workers"] == 1 and found,
            10,
            what="the dashboard lists the default queue's worker",
        )
        assert queues["cpu"]["workers"] == 0 and queues["cpu"]["waiting"] == 2, queues
        assert queue_depth(client, "cpu") == 2
        assert queue_depth(client, "default") == 0

        response = client.post(f"/jobs/{cancelled}/cancel")
        assert response.status_code == 200, response.text
        with redis_client(QUEUE_DB) as queue_redis:
            assert queue_redis.zscore(queue_key, cancelled) is None, "off its own queue"
            assert queue_redis.zscore(queue_key, waiting) is not None

        cpu_worker = stack.enter_context(
            worker(
                deployment.environment(**common, WORKER_QUEUES="cpu"),
                deployment.logs / "worker-cpu.log",
                name="worker-cpu",
            )
        )
        record = wait_finished(client, waiting, timeout=20)
        assert record["status"] == "succeeded", record
        assert client.get(f"/jobs/{cancelled}").json()["status"] == "cancelled"
        assert cancelled not in cpu_worker.output(), "a cancelled job never runs"
        queues = wait_for(
            lambda: (found := dashboard_queues(client))["cpu"]["workers"] == 1 and found,
            10,
            what="the dashboard lists the cpu queue's worker",
        )
        state = client.get("/dashboard/state").json()
        assert sorted(tuple(each["queues"]) for each in state["workers"]) == [
            ("cpu",),
            ("default",),
        ]


@pytest.mark.processes
def test_a_dead_workers_job_runs_again_on_another_worker_of_its_queue(
    job_directory: Path,
    deployment: Deployment,
) -> None:
    module = write_module(job_directory, QUEUED_JOBS)
    environment = deployment.environment(
        JOBCACHE_JOBS=module, PYTHONPATH=str(job_directory), WORKER_LEASE="1", WORKER_QUEUES="cpu"
    )
    with ExitStack() as stack:
        doomed = stack.enter_context(
            worker(environment, deployment.logs / "worker-doomed.log", name="worker-doomed")
        )
        served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=10))
        job_id = deployment.submit(client, "nap", {"seconds": 1.5})
        wait_for(
            lambda: client.get(f"/jobs/{job_id}").json()["status"] == "running",
            10,
            what="the nap starts",
        )
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(10)
        stack.enter_context(
            worker(environment, deployment.logs / "worker-heir.log", name="worker-heir")
        )
        record = wait_finished(client, job_id, timeout=30)
        assert record["status"] == "succeeded", record
        assert record["result"]["attempt"] == 2, record
        assert record["attempts"] == 2


@pytest.mark.processes
def test_a_worker_asked_to_serve_a_queue_no_job_type_is_on_refuses_to_start(
    deployment: Deployment, tmp_path: Path
) -> None:
    exited = run_until_exit(
        "worker",
        worker_command(),
        deployment.environment(WORKER_QUEUES="default,gpu"),
        tmp_path / "worker.log",
    )
    assert exited.code != 0
    assert "WORKER_QUEUES" in exited.output and "gpu" in exited.output, exited.output
    assert "default, cpu" in exited.output, "the message lists the queues there are"


async def test_queue_names_are_checked_where_they_are_declared() -> None:
    from pydantic import BaseModel

    from shared.errors import ConfigurationError
    from shared.jobs import job

    class Text(BaseModel):
        text: str

    async def shout(parameters: Text, context: object) -> Text:
        return parameters

    with pytest.raises(ConfigurationError, match=r"shout.*queue 'GPU!'"):
        job(queue="GPU!")(shout)
    assert job(queue="gpu-2")(shout).queue == "gpu-2"
    assert job()(shout).queue == "default"
