"""docker-compose.yml run for real, as an operator runs it, with podman and podman-compose: the
default stack (health, a job, three workers, a restart, `down`), in one test: a stack takes
seconds to start. tests/compose_stack.py runs the stacks; tests/compose/images.sh builds the
images. (The Sentinel profile's test, a killed master and a recreated Sentinel, is not in the
suite yet: one failover in three stalled for 120 s under podman's DNS, see docs/operations.md.)"""

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.compose_stack import (
    STACK_SERVICES,
    ComposeStack,
    compose_stack,
    podman,
    podman_compose,
    prepare_images,
    stack_settings,
    wait_until,
)

pytestmark = pytest.mark.processes
logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0
STOP_GRACE = 30
"""The workers' stop_grace_period in docker-compose.yml: `down` must not need more."""


@pytest.fixture(scope="module")
def images() -> Iterator[None]:
    podman_compose()
    prepare_images()
    yield


def submit(stack: ComposeStack, name: str, parameters: dict[str, Any]) -> str:
    answer = stack.api.post(f"/jobs/{name}", json=parameters)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def succeeded(stack: ComposeStack, job_id: str, within: float = 30.0) -> dict[str, Any]:
    """The job's record once it has succeeded, as a client reads it with the key."""

    def record() -> dict[str, Any] | None:
        answer = stack.api.get(f"/jobs/{job_id}", params={"wait": 5})
        if answer.status_code == 404:
            return None  # After a restart the record is back once a worker has run the job.
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        assert found["status"] not in ("failed", "cancelled"), found
        return found if found["status"] == "succeeded" else None

    found: dict[str, Any] = wait_until(record, within, f"job {job_id} succeeded")
    return found


def start(stack: ComposeStack, *services: str) -> None:
    stack.compose("up", "--detach", *services)
    for service in ("redis", "cache-redis", *services):
        wait_until(lambda s=service: stack.healthy(s), START_TIMEOUT, f"{service} healthy")
    wait_until(
        lambda: stack.api.get("/health/ready").status_code == 200, START_TIMEOUT, "api ready"
    )


def ran(stack: ComposeStack, job_ids: list[str]) -> bool:
    """Whether the workers' logs say that each of these jobs succeeded."""
    events = [
        json.loads(line)
        for service in ("worker", "worker-cpu")
        for line in stack.logs(service).splitlines()
        if line.startswith("{")
    ]
    done = {event["job_id"] for event in events if event.get("event") == "job.succeeded"}
    return done >= set(job_ids)


def default_queue_workers(stack: ComposeStack) -> list[dict[str, Any]]:
    state = stack.api.get("/dashboard/state").raise_for_status().json()
    return [worker for worker in state["workers"] if worker["queues"] == ["default"]]


def timed(action: Any) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


@pytest.mark.timeout(600)
def test_the_default_stack_runs_jobs_scales_keeps_its_queue_across_a_restart_and_stops(
    images: None,
) -> None:
    with compose_stack(stack_settings()) as stack:
        start(stack, *STACK_SERVICES)
        assert stack.api.get("/health").json()["status"] == "ok"

        # A job submitted with the .env key succeeds; without the key nothing is accepted.
        anonymous = httpx.post(f"{stack.api.base_url}/jobs/echo", json={"message": "hi"})
        assert anonymous.status_code == 401
        job_id = submit(stack, "echo", {"message": "hello from compose"})
        assert succeeded(stack, job_id)["result"] == {"message": "hello from compose"}

        # Jobs queued while no worker runs are still there after the stack is restarted (the
        # queue's append-only file is on a volume), and then run.
        stack.compose("stop", "worker", "worker-cpu")
        queued = [submit(stack, "echo", {"message": f"queued {n}"}) for n in range(5)]
        queued.append(submit(stack, "primes", {"limit": 1000}))
        stack.compose("down")
        assert stack.containers() == []
        start(stack, *STACK_SERVICES)
        # The workers' logs, as an operator reads them, say each queued job ran. (Not their
        # records: cache-redis keeps nothing across a restart, and the worker does not write a
        # record that is gone, so those jobs read as unknown, 404.)
        wait_until(
            lambda: ran(stack, queued), START_TIMEOUT, "the queued jobs ran after the restart"
        )

        # --scale worker=3: three workers of the default queue, each taking jobs.
        stack.compose("up", "--detach", "--scale", "worker=3", *STACK_SERVICES)
        assert len(stack.containers("worker")) == 3
        wait_until(
            lambda: stack.healthy("worker") and len(default_queue_workers(stack)) == 3,
            START_TIMEOUT,
            "three workers heartbeating",
        )
        targets = stack.api.get("/metrics/targets").raise_for_status().json()
        workers = default_queue_workers(stack)
        target_of = {target["labels"]["worker"]: target["targets"] for target in targets}
        assert len(targets) == 4  # the three, and worker-cpu's
        assert all(worker["metrics_address"] for worker in workers)
        assert {worker["id"]: [worker["metrics_address"]] for worker in workers}.items() <= (
            target_of.items()
        )
        hostnames = {stack.hostname(name) for name in stack.containers("worker")}
        assert {worker["host"] for worker in workers} == hostnames
        # (The restarted stack's first worker has run the queued echo jobs.) More jobs than the
        # three take at once (10 each), each long enough that all are busy.
        batch = stack.api.post("/jobs/sleep/batch", json=[{"seconds": 1.5}] * 45)
        assert batch.status_code == 202, batch.text
        for job in batch.json()["jobs"]:
            succeeded(stack, job["id"])

        def succeeded_by_worker() -> dict[str, int] | None:
            """Each worker's count of succeeded jobs, once their heartbeats count them all."""
            counts = {worker["id"]: worker["succeeded"] for worker in default_queue_workers(stack)}
            return counts if sum(counts.values()) == len(queued) - 1 + 45 else None

        by_worker = wait_until(succeeded_by_worker, 30, "the workers' heartbeats count the jobs")
        assert len(by_worker) == 3 and all(by_worker.values()), by_worker

        # The stack stops within the workers' grace (running jobs finish or go back to the
        # queue). The workers first, as Docker Compose orders it by itself: podman-compose's
        # `down` stops every container at once, and a worker would then be stopping while
        # Redis goes away (docs/operations.md: What happens when things fail). Its `down` knows
        # only the file's scale, so the two added by --scale are "orphans" to it.
        worker_containers = [*stack.containers("worker"), *stack.containers("worker-cpu")]
        seconds = timed(lambda: podman("stop", "--time", str(STOP_GRACE), *worker_containers))
        assert seconds < STOP_GRACE, f"the workers took {seconds:.1f}s to stop"
        seconds = timed(lambda: stack.compose("down", "--remove-orphans"))
        assert seconds < STOP_GRACE, f"down took {seconds:.1f}s"
        assert stack.containers() == []
