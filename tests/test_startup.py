"""Startup as a user sees it: real api and worker processes that either run, or exit at once
with a message naming the setting to fix (and never showing the Redis password)."""

import secrets
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    RedisServer,
    api,
    api_command,
    child_environment,
    free_port,
    redis_server,
    run_until_exit,
    wait_for,
    worker,
    worker_command,
)

pytestmark = pytest.mark.processes

FAILS_FAST_SECONDS = 10.0
PASSWORD = f"right-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def protected_redis() -> Iterator[RedisServer]:
    """A private redis-server that asks for PASSWORD."""
    with redis_server(password=PASSWORD) as server:
        yield server


def redis_mode(server_settings: dict[str, str], **settings: str) -> dict[str, str]:
    return child_environment(
        {
            "CACHE_BACKEND": "redis",
            "CACHE_NAMESPACE": f"test-{uuid.uuid4().hex}",
            "CPU_WORKERS": "1",
            **server_settings,
            **settings,
        }
    )


def command_of(process: str) -> list[str]:
    return api_command(free_port()) if process == "api" else worker_command()


def test_right_password_runs_a_job_without_logging_it(
    protected_redis: RedisServer, tmp_path: Path
) -> None:
    environment = redis_mode(protected_redis.settings)
    assert environment["REDIS_PASSWORD"] == PASSWORD
    with ExitStack() as stack:
        started = stack.enter_context(worker(environment, tmp_path / "worker.log"))
        served = stack.enter_context(api(environment, tmp_path / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))
        response = client.post("/jobs/echo", json={"message": "through a password"})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

        def finished() -> dict[str, object] | None:
            record: dict[str, object] = client.get(f"/jobs/{job_id}").json()
            return record if record["status"] in ("succeeded", "failed") else None

        record = wait_for(finished, 15, what="job finishes")
        assert record["status"] == "succeeded"
        assert record["result"] == {"message": "through a password"}
        assert client.get("/health").json() == {"status": "ok", "backend": "redis", "redis": True}
    for output in (started.output(), served.output()):
        assert f"job {job_id} (echo)" in output
        assert PASSWORD not in output


@pytest.mark.parametrize("process", ["api", "worker"])
def test_wrong_password_fails_fast_naming_redis_password(
    process: str, protected_redis: RedisServer, tmp_path: Path
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    environment = redis_mode(protected_redis.settings, REDIS_PASSWORD=wrong)

    exited = run_until_exit(process, command_of(process), environment, tmp_path / "out.log")

    assert exited.code != 0, exited.output
    assert exited.seconds < FAILS_FAST_SECONDS
    assert "REDIS_PASSWORD" in exited.output
    assert wrong not in exited.output
    assert PASSWORD not in exited.output


@pytest.mark.parametrize("process", ["api", "worker"])
def test_unreachable_redis_fails_fast_naming_redis_host(process: str, tmp_path: Path) -> None:
    closed_port = free_port()
    environment = redis_mode({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(closed_port)})

    exited = run_until_exit(process, command_of(process), environment, tmp_path / "out.log")

    assert exited.code != 0, exited.output
    assert exited.seconds < FAILS_FAST_SECONDS
    assert f"Redis at 127.0.0.1:{closed_port}" in exited.output
    assert "REDIS_HOST" in exited.output


@pytest.mark.parametrize("backend", ["local", None], ids=["local", "unset"])
def test_worker_without_redis_mode_exits_explaining_it(backend: str | None, tmp_path: Path) -> None:
    environment = child_environment({} if backend is None else {"CACHE_BACKEND": backend})

    exited = run_until_exit("worker", worker_command(), environment, tmp_path / "out.log")

    assert exited.code != 0, exited.output
    assert exited.seconds < FAILS_FAST_SECONDS
    assert "needs CACHE_BACKEND=redis" in exited.output
    assert "Starting worker" not in exited.output


def test_unknown_cache_backend_stops_the_api_naming_it(tmp_path: Path) -> None:
    secret = f"never-shown-{secrets.token_hex(8)}"
    environment = child_environment({"CACHE_BACKEND": "bogus", "REDIS_PASSWORD": secret})

    exited = run_until_exit("api", api_command(free_port()), environment, tmp_path / "out.log")

    assert exited.code != 0, exited.output
    assert exited.seconds < FAILS_FAST_SECONDS
    assert "CACHE_BACKEND" in exited.output
    assert "'bogus'" in exited.output
    assert secret not in exited.output
