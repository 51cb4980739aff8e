"""A client generated from the running api's /openapi.json (openapi-python-client, as a user
would generate one) reads typed records: a job's result as its job type's result model, every
field the api always sends as present, batches and pages as lists of them; in the local mode
and in the redis mode, where a worker process runs the jobs."""

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.deployments import Deployment, start_all
from tests.processes import BIN, api, child_environment

pytestmark = pytest.mark.processes

KEY = "generated-7d2c1e9f4b3a48d6a5e0f1c2b3d4e5f6"
GENERATOR_CONFIG = {"post_hooks": []}
"""No formatter run on the generated code: nothing to install, and seconds saved."""


@dataclass(frozen=True)
class Served:
    url: str
    key: str


@pytest.fixture(params=["local", "redis"])
def served(
    request: pytest.FixtureRequest, tmp_path: Path, namespace: str, deployment: Deployment
) -> Iterator[Served]:
    """uvicorn serving the api: in the local mode it runs the jobs itself; in the redis mode a
    worker process does, and the api wants an API key."""
    with ExitStack() as stack:
        if request.param == "local":
            environment = child_environment(
                {"CACHE_BACKEND": "local", "CACHE_NAMESPACE": namespace, "CPU_WORKERS": "1"}
            )
            running = stack.enter_context(api(environment, tmp_path / "api.log"))
        else:
            running = start_all(stack, deployment, workers=1, API_KEYS=KEY)
        # Without API_KEYS the api does not look at a key sent: the generated client sends one.
        yield Served(running.url, KEY)


def generated_client(url: str, directory: Path) -> ModuleType:
    """The package openapi-python-client makes from the api's document, imported under a
    name of its own."""
    schema = directory / "openapi.json"
    schema.write_bytes(httpx.get(f"{url}/openapi.json", timeout=10).content)
    config = directory / "generator.json"
    config.write_text(json.dumps(GENERATOR_CONFIG))
    package = f"generated_jobcache_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(schema),
            "--output-path",
            str(directory / package),
            "--meta",
            "none",
            "--config",
            str(config),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(directory))


@pytest.fixture
def generated(served: Served, tmp_path: Path) -> Iterator[ModuleType]:
    package = generated_client(served.url, tmp_path)
    yield package
    for name in [name for name in sys.modules if name.partition(".")[0] == package.__name__]:
        del sys.modules[name]


def operation(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.jobs.{name}")


def test_a_generated_client_reads_typed_records(served: Served, generated: ModuleType) -> None:
    models = importlib.import_module(f"{generated.__name__}.models")
    submit_echo = operation(generated, "submit_echo_jobs_echo_post")
    batch_echo = operation(generated, "batch_echo_jobs_echo_batch_post")
    get_job = operation(generated, "get_job_jobs_job_id_get")
    list_jobs = operation(generated, "list_jobs_jobs_get")
    once = f"generated-{uuid.uuid4().hex}"
    with generated.AuthenticatedClient(
        base_url=served.url, token=served.key, raise_on_unexpected_status=True
    ) as client:
        submitted = submit_echo.sync(
            client=client, body=models.EchoParameters(message="hi"), idempotency_key=once
        )
        assert isinstance(submitted, models.EchoJob), submitted
        assert (submitted.status, submitted.result, submitted.attempts) == (
            models.JobStatus.QUEUED,
            None,
            0,
        )
        finished = get_job.sync(submitted.id, client=client, wait=10)
        assert isinstance(finished, models.JobView)
        assert finished.status == models.JobStatus.SUCCEEDED, finished
        # GET /jobs/{id} serves every job type: its result is the JSON object as it came.
        assert finished.result == {"message": "hi"}

        # The submit route's 200, a repeat of the request, is the job as it is now: typed.
        replayed = submit_echo.sync_detailed(
            client=client, body=models.EchoParameters(message="hi"), idempotency_key=once
        )
        assert replayed.status_code == 200
        assert isinstance(replayed.parsed.result, models.EchoResult)
        assert replayed.parsed.result.message == "hi"
        assert replayed.parsed.finished_at is not None

        batch = batch_echo.sync(
            client=client,
            body=[models.EchoParameters(message="a"), models.EchoParameters(message="b")],
        )
        assert isinstance(batch, models.EchoBatch), batch
        assert all(isinstance(job, models.EchoJob) for job in batch.jobs)
        batch_ids = [job.id for job in batch.jobs]
        for job_id in batch_ids:
            done = get_job.sync(job_id, client=client, wait=10)
            assert done.status == models.JobStatus.SUCCEEDED, done

        page = list_jobs.sync(client=client, name="echo", limit=10)
        assert isinstance(page, models.JobPage), page
        # Newest first: the batch's jobs (made at one time), then the first job.
        assert {job.id for job in page.jobs[:2]} == set(batch_ids)
        assert page.jobs[2].id == submitted.id
        assert all(isinstance(job, models.JobView) for job in page.jobs)
        assert {job.result["message"] for job in page.jobs} == {"hi", "a", "b"}
        assert (len(page.jobs), page.next_) == (3, None)
