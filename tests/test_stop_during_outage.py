"""A worker stopped (SIGTERM) while its Redis is down, or while its Redis's name no longer
resolves (a compose service whose container is stopped), exits within WORKER_SHUTDOWN_GRACE and
the stop's writes' deadline, leaves a job it cannot put back to its lease, and reports no
exception as never retrieved."""

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.deployments import wait_finished
from tests.processes import (
    BIN,
    RedisServer,
    Worker,
    api,
    child_environment,
    redis_server,
    running,
    wait_for,
    worker,
)
from worker.stopping import STOP_WRITES_SECONDS

pytestmark = pytest.mark.processes

GRACE = 2
LEASE = 2
MARGIN = 5.0
"""Seconds beyond the grace and the stop's deadline a busy machine may take to exit; the
worker before the fix waited until Redis came back, so for ever here."""
STOP_BOUND = GRACE + STOP_WRITES_SECONDS + MARGIN
UNRETRIEVED = ("Future exception was never retrieved", "Task exception was never retrieved")
STOPPED = "worker stopped"
LEFT_TO_LEASE = "left to its lease"


def environment(server: RedisServer, **settings: str) -> dict[str, str]:
    return child_environment(
        {
            "CACHE_BACKEND": "redis",
            **server.settings,
            "CACHE_NAMESPACE": f"stop-outage-{server.port}",
            "CPU_WORKERS": "1",
            "LOG_LEVEL": "INFO",
            "WORKER_SHUTDOWN_GRACE": str(GRACE),
            "WORKER_LEASE": str(LEASE),
            **settings,
        }
    )


def stop_and_time(stopping: Worker) -> tuple[int, float]:
    """SIGTERM; the exit code and the seconds it took, or AssertionError past STOP_BOUND."""
    started = time.monotonic()
    stopping.process.send_signal(signal.SIGTERM)
    try:
        code = stopping.process.wait(STOP_BOUND)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker still runs {STOP_BOUND:g}s after SIGTERM") from None
    return code, time.monotonic() - started


def assert_stopped_cleanly(stopped: Worker) -> str:
    output = stopped.output()
    assert STOPPED in output
    for unretrieved in UNRETRIEVED:
        assert unretrieved not in output
    return output


def test_an_idle_worker_stops_promptly_while_redis_is_down(tmp_path: Path) -> None:
    with redis_server() as server, worker(environment(server), tmp_path / "worker.log") as idle:
        server.stop()
        code, seconds = stop_and_time(idle)
        assert code == 0, f"exit code {code}"
        assert_stopped_cleanly(idle)
        # Nothing to put back: only its last writes (the heartbeat's withdrawal...) wait.
        assert seconds < STOP_WRITES_SECONDS + MARGIN


def test_a_job_the_stopping_worker_cannot_put_back_runs_elsewhere_after_its_lease(
    tmp_path: Path,
) -> None:
    with redis_server(appendonly=True) as server:
        settings = environment(server)
        with api(settings, tmp_path / "api.log") as served:
            with worker(settings, tmp_path / "worker-1.log", name="worker-1") as first:
                response = httpx.post(f"{served.url}/jobs/sleep", json={"seconds": 4})
                assert response.status_code == 202, response.text
                job_id = response.json()["id"]
                wait_for(
                    lambda: f"job {job_id} (sleep) started" in first.output(),
                    20,
                    what="the first worker starts the job",
                )
                server.stop()
                code, seconds = stop_and_time(first)
                assert code == 0, f"exit code {code}"
                output = assert_stopped_cleanly(first)
                assert f"job {job_id}: " in output and LEFT_TO_LEASE in output
                assert seconds >= GRACE - 0.5, "the job was given its grace"
            server.start()
            with worker(settings, tmp_path / "worker-2.log", name="worker-2") as second:
                with httpx.Client(base_url=served.url) as client:
                    record = wait_finished(client, job_id, timeout=LEASE + 4 + 20)
                assert record["status"] == "succeeded", record
                assert record["attempts"] == 2
                assert f"job {job_id} (sleep) started, attempt 2" in second.output()


@contextmanager
def own_hosts_file(directory: Path, name: str) -> Iterator[list[str]]:
    """A command prefix that runs a process in a mount namespace of its own whose /etc/hosts
    is a file of the test's, naming `name` 127.0.0.1, as a container network names a service;
    the test then removes the name to make it stop resolving. Fails where the system lets no
    process have a user namespace (CI's machines do: the test is not to pass by skipping)."""
    unshare = shutil.which("unshare")
    probe = [unshare or "unshare", "--map-root-user", "--mount", "true"]
    if unshare is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.fail("needs unshare and user namespaces (a private /etc/hosts), which it lacks")
    hosts = directory / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {name}\n")
    yield [
        unshare, "--map-root-user", "--mount", "sh", "-c",
        f'mount --bind "{hosts}" /etc/hosts && exec "$0" "$@"',
    ]  # fmt: skip


def test_a_worker_stops_promptly_when_its_redis_name_stops_resolving(tmp_path: Path) -> None:
    """As in compose when the Redis container stops: the service's name is gone, so every
    connect fails in the name's lookup (gaierror), not with a refused connection."""
    name = "jobcache-stop-test-redis"
    with redis_server() as server, own_hosts_file(tmp_path, name) as prefix:
        settings = environment(server, REDIS_HOST=name)
        command = [*prefix, str(BIN / "python"), "-m", "worker"]
        with running("worker", command, settings, tmp_path / "worker.log") as child:
            cut_off = Worker(child.name, child.process, child.log_path)
            cut_off.wait_ready()
            (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")  # the same file, rewritten
            server.stop()
            # Its heartbeat, subscriptions and queue reads fail to look the name up meanwhile.
            wait_for(
                lambda: "cannot reach Redis" in cut_off.output(),
                20,
                what="the worker notices that Redis is gone",
            )
            code, _ = stop_and_time(cut_off)
            assert code == 0, f"exit code {code}"
            assert_stopped_cleanly(cut_off)
