"""Fixtures for in-process tests: the app inside its lifespan, driven through ASGITransport."""

import asyncio
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from asgi_lifespan import LifespanManager

from api.main import create_app
from api.services import Services
from shared.catalog import DEFAULT_QUEUE
from shared.keys import Keys
from shared.settings import Settings
from tests.deployments import (
    QUEUE_DB,
    REDIS_HOST,
    REDIS_PORT,
    Deployment,
    delete_namespace,
    delete_what_deployment_created,
    redis_client,
)
from worker.arq_internals import QueueWaitingRedis


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def settings_for_test(**values: Any) -> Settings:
    """Settings from these values and defaults only: no environment file is read."""
    return Settings(_env_file=None, **values)


@pytest.fixture(params=["local", "redis"])
def mode(request: pytest.FixtureRequest, namespace: str) -> Iterator[str]:
    """Each mode of an in-process app: `local` (it runs its jobs itself), or `redis` (on the
    shared Redis, without a worker: its jobs stay queued), whose keys are deleted after."""
    yield request.param
    if request.param == "redis":
        delete_namespace(namespace)


def settings_in(mode: str, namespace: str, **values: Any) -> Settings:
    """Settings of `mode` under the test's namespace, with these values."""
    return settings_for_test(cache_backend=mode, cache_namespace=namespace, cpu_workers=1, **values)


@pytest.fixture
def local_settings(namespace: str) -> Settings:
    return settings_for_test(cache_backend="local", cache_namespace=namespace, cpu_workers=1)


@pytest.fixture
async def local_client(local_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app in the local mode: no Redis, the app runs jobs itself."""
    async with client_for(local_settings) as client:
        yield client


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app for these settings, started in its lifespan, with an HTTP client talking to it."""
    async with served_for(settings) as (_, client):
        yield client


@asynccontextmanager
async def served_for(settings: Settings) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    """As `client_for`, and what the started app opened (its backend, settings, catalog)."""
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=15, shutdown_timeout=15) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://jobcache.test"
        ) as client,
    ):
        yield app.state.services, client


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 10.0, interval: float = 0.02
) -> Any:
    """Await `check` until it returns something truthy, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value {value!r})")
        await asyncio.sleep(interval)


async def ended_in(worker: Worker, job_id: str) -> bool:
    """Whether `worker` holds nothing of the job any more: its in-progress key is gone and
    arq's task for it is done. Stop a worker only then: stopped while it still writes a job's
    end, it cancels that write, and arq's close() raises the cancellation."""
    held = await worker.pool.exists(in_progress_key_prefix + job_id)
    return not held and all(task.done() for task in worker.tasks.values())


async def finished_record(
    client: httpx.AsyncClient, job_id: str, within: float = 10.0
) -> dict[str, Any]:
    """Poll GET /jobs/{id} as a client would until the job has succeeded or failed."""

    async def check() -> dict[str, Any] | None:
        response = await client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        return (
            record if record["status"] in ("succeeded", "failed", "cancelled", "expired") else None
        )

    result: dict[str, Any] = await eventually(check, within)
    return result


@pytest.fixture
async def pool(namespace: str) -> AsyncIterator[QueueWaitingRedis]:
    """A worker's arq pool on the shared Redis, for an in-process worker of the test's own
    default queue (`<namespace>:queue:default`)."""
    queue = Keys(namespace).queue(DEFAULT_QUEUE)
    pool = QueueWaitingRedis(
        queues=[queue], fallback_poll=0.1, host=REDIS_HOST, port=REDIS_PORT,
        default_queue_name=queue,
    )  # fmt: skip
    yield pool
    await pool.aclose()


@pytest.fixture
def new_deployment(tmp_path: Path) -> Iterator[Any]:
    """Makes deployments, each under a namespace of its own; afterwards deletes their keys and
    arq's keys of their jobs."""
    with redis_client(QUEUE_DB) as client:
        try:
            client.ping()
        except redis.ConnectionError as error:
            pytest.fail(f"these tests need Redis at {REDIS_HOST}:{REDIS_PORT}: {error}")
    created: list[Deployment] = []

    def make() -> Deployment:
        name = f"test-{uuid.uuid4().hex}"
        deployment = Deployment(name, tmp_path / name)
        created.append(deployment)
        return deployment

    yield make
    for deployment in created:
        delete_what_deployment_created(deployment)


@pytest.fixture
def deployment(new_deployment: Any) -> Deployment:
    made: Deployment = new_deployment()
    return made


@pytest.fixture
def job_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on the import path, outside the repository; modules written there are
    forgotten again afterwards."""
    directory = tmp_path / "team"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    before = set(sys.modules)
    yield directory
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(directory) in str(
            sys.modules[name].__file__
        ):
            del sys.modules[name]


def write_module(directory: Path, text: str) -> str:
    """Write a module of its own name (never one an earlier test imported); its name."""
    name = f"team_jobs_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(text))
    return name
