"""The job catalog: one declaration per job type, loaded at startup from the modules
JOBCACHE_JOBS names (the built-in ones by default), read by the api, the worker and OpenAPI."""

import os
import subprocess
import sys
from pathlib import Path

from shared.catalog import load_catalog
from shared.keys import is_job_id, new_job_id
from tests.conftest import client_for, settings_for_test
from worker.main import worker_options
from worker.runner import REDELIVERIES

JOB_TYPES = load_catalog(settings_for_test().job_modules)


def test_the_default_job_types_are_the_built_in_five_each_with_its_code() -> None:
    assert sorted(JOB_TYPES) == ["echo", "fail", "primes", "sleep", "text_stats"]
    assert all(job_type.implementation is not None for job_type in JOB_TYPES.values())


def test_worker_registers_one_arq_function_per_job_type_with_its_timeout() -> None:
    options = worker_options(settings_for_test(cache_backend="redis"), JOB_TYPES)
    functions = {function.name: function for function in options["functions"]}
    assert set(functions) == set(JOB_TYPES)
    for name, job_type in JOB_TYPES.items():
        assert functions[name].timeout_s > job_type.timeout
        assert functions[name].max_tries == job_type.max_attempts + REDELIVERIES + 1
    assert options["keep_result"] == 0, "arq must not keep a second copy of each result"


def test_importing_the_api_and_the_worker_reads_no_settings() -> None:
    """Settings are read when a process starts: importing its code with settings that would
    stop it at startup succeeds."""
    environment = {**os.environ, "CACHE_TTL": "not a number", "JOBCACHE_ENV_FILE": ""}
    imported = subprocess.run(
        [sys.executable, "-c", "import api.main, worker.main"],
        cwd=Path(__file__).parents[1], env=environment, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr


def test_the_api_runs_without_the_worker_process_code() -> None:
    """The api hosts only the embedded worker: the worker process's code, what it replaces of
    arq's Worker, and uvloop belong to `python -m worker` alone."""
    imported = subprocess.run(
        [
            sys.executable, "-c",
            "import sys, api.main; print(' '.join(name for name in "
            "('worker.main', 'worker.arq_internals', 'worker.monitoring', 'uvloop') "
            "if name in sys.modules))",
        ],
        cwd=Path(__file__).parents[1], env={**os.environ, "JOBCACHE_ENV_FILE": ""},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == []


async def test_openapi_documents_each_job_type_with_its_own_parameter_schema(
    namespace: str,
) -> None:
    async with client_for(settings_for_test(cache_namespace=namespace, cpu_workers=1)) as client:
        schema = (await client.get("/openapi.json")).json()
    for name, job_type in JOB_TYPES.items():
        operation = schema["paths"][f"/jobs/{name}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"].endswith(f"/{job_type.parameters.__name__}")
        assert operation["summary"] == job_type.summary
    assert "/jobs/{name}" not in schema["paths"], "the unknown-name fallback is not an operation"


def test_job_ids_are_random_unguessable_and_recognised() -> None:
    ids = {new_job_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(is_job_id(job_id) and len(job_id) == 22 for job_id in ids)  # 128 random bits
    assert not is_job_id("../../etc/passwd") and not is_job_id("a" * 21)
