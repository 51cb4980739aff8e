"""No process outlives the worker or api that started it: the CPU pool's processes and
multiprocessing's resource tracker end with a worker killed with SIGKILL or stopped with
SIGTERM, and with the local mode's api, which also leaves no semaphore behind."""

import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.deployments import Deployment, wait_finished
from tests.processes import (
    BIN,
    ChildProcess,
    ProcessIdentity,
    api,
    child_environment,
    descendants,
    running,
    still_running,
    wait_for,
    worker,
)

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(sys.platform != "linux", reason="reads the process tree from /proc"),
]

GONE_WITHIN = 5.0
LEAKED = "leaked semaphore"
WATCHED_POOL = """
import concurrent.futures, multiprocessing, time
from worker.cpu_pool import exit_when_parent_ends
pool = concurrent.futures.ProcessPoolExecutor(
    1, mp_context=multiprocessing.get_context("spawn"), initializer=exit_when_parent_ends
)
pool.submit(time.sleep, 60)
time.sleep(60)
"""


def run_primes(client: httpx.Client, deployment: Deployment) -> None:
    """A job whose code runs in the CPU pool, so that the pool has started its process."""
    job_id = deployment.submit(client, "primes", {"limit": 100_000})
    record = wait_finished(client, job_id)
    assert record["status"] == "succeeded", record
    assert record["result"]["count"] == 9592


def pool_processes(parent: ChildProcess) -> list[ProcessIdentity]:
    """What runs below `parent` once its CPU pool has worked: the pool's process and the
    resource tracker, both started with multiprocessing's command lines."""
    below = descendants(parent.pid)
    commands = " | ".join(process.command for process in below)
    assert "multiprocessing.spawn" in commands, commands
    assert "multiprocessing.resource_tracker" in commands, commands
    return below


def wait_all_gone(processes: list[ProcessIdentity]) -> None:
    """Wait for every one of `processes` to end; those still running after GONE_WITHIN are
    killed, so that a failing test leaves none behind either."""
    try:
        wait_for(
            lambda: not any(still_running(process) for process in processes),
            GONE_WITHIN,
            what=f"every one of {processes} has ended",
        )
    except TimeoutError:
        for process in filter(still_running, processes):
            os.kill(process.pid, signal.SIGKILL)
        raise


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_stopped_worker_leaves_no_process_behind(deployment: Deployment, stop: str) -> None:
    environment = deployment.environment()
    with ExitStack() as stack:
        started = stack.enter_context(worker(environment, deployment.logs / "worker.log"))
        served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))
        run_primes(client, deployment)
        left = pool_processes(started)
        started.process.send_signal(getattr(signal, stop))
        code = started.process.wait(GONE_WITHIN)
        assert code == (-signal.SIGKILL if stop == "SIGKILL" else 0), started.output()
        wait_all_gone(left)


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_stopping_the_local_mode_api_leaves_no_process_and_no_leaked_semaphore(
    tmp_path: Path, stop: str
) -> None:
    environment = child_environment({"CACHE_BACKEND": "local", "CPU_WORKERS": "1"})
    deployment = Deployment("local", tmp_path)
    with api(environment, tmp_path / "api.log") as served:
        with httpx.Client(base_url=served.url, timeout=5) as client:
            run_primes(client, deployment)
        left = pool_processes(served)
        served.process.send_signal(getattr(signal, stop))
        served.process.wait(GONE_WITHIN)
        wait_all_gone(left)
        output = served.output()
    assert "Application shutdown complete" in output
    assert LEAKED not in output


def test_where_the_kernel_cannot_kill_them_pool_processes_end_with_their_parent(
    tmp_path: Path,
) -> None:
    """The watch used off Linux (a thread on the parent's sentinel), tried on its own here."""
    command = [str(BIN / "python"), "-c", WATCHED_POOL]
    with running("pool", command, child_environment({}), tmp_path / "pool.log") as parent:
        left = wait_for(
            lambda: (found := descendants(parent.pid)) and len(found) == 2 and found,
            10,
            what="the pool's process and the resource tracker run",
        )
        parent.process.kill()
        parent.process.wait(GONE_WITHIN)
        wait_all_gone(left)
