"""Job types from a team's own module: JOBCACHE_JOBS names modules outside jobcache's packages,
whose `@job` functions the api serves and the workers run, in both modes; a bad module or
declaration stops the process at startup with a message naming the module and the job."""

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app, install_submit_routes
from shared.catalog import load_catalog
from shared.errors import ConfigurationError
from tests.conftest import client_for, finished_record, settings_for_test, write_module
from tests.deployments import Deployment, start_all, wait_finished
from tests.processes import (
    api_command,
    child_environment,
    free_port,
    run_until_exit,
    worker_command,
)

TEAM_JOBS = '''
"""A team's own job types, in its own package."""

from pydantic import BaseModel

from shared.jobs import JobContext, job


class Shout(BaseModel):
    text: str


class Shouted(BaseModel):
    text: str
    letters: int
    attempt: int


def count_letters(text: str) -> int:
    """Top-level, so that the worker's process pool can run it."""
    return sum(character.isalpha() for character in text)


@job(summary="Shout a text back", timeout=20, retries=1)
async def shout(parameters: Shout, context: JobContext) -> Shouted:
    await context.report_progress(1, 2, "counted")
    letters = await context.run_in_process(count_letters, parameters.text)
    return Shouted(text=parameters.text.upper(), letters=letters, attempt=context.attempt)
'''


async def test_a_job_from_the_teams_own_module_runs_in_the_local_mode(
    job_directory: Path, namespace: str
) -> None:
    module = write_module(job_directory, TEAM_JOBS)
    settings = settings_for_test(cache_namespace=namespace, cpu_workers=1, jobcache_jobs=module)
    async with client_for(settings) as client:
        submitted = await client.post("/jobs/shout", json={"text": "héllo, world"})
        assert submitted.status_code == 202, submitted.text
        record = await finished_record(client, submitted.json()["id"], within=30)
        assert record["status"] == "succeeded", record
        assert record["result"] == {"text": "HÉLLO, WORLD", "letters": 10, "attempt": 1}
        assert record["max_attempts"] == 2
        assert record["progress"] == {"current": 1, "total": 2, "message": "counted"}

        schema = (await client.get("/openapi.json")).json()
        operation = schema["paths"]["/jobs/shout"]["post"]
        assert operation["summary"] == "Shout a text back"
        assert "/jobs/echo" not in schema["paths"], "only the modules named are loaded"
        unknown = await client.post("/jobs/echo", json={"message": "hi"})
        assert unknown.status_code == 404
        assert unknown.json()["known_job_types"] == ["shout"]
        misspelt = await client.post("/jobs/shout", json={"txt": "hi"})
        assert misspelt.status_code == 422, "an unknown field is an error, as for built-in jobs"


@pytest.mark.processes
def test_a_job_from_the_teams_own_module_runs_on_real_workers(
    job_directory: Path, deployment: Deployment
) -> None:
    module = write_module(job_directory, TEAM_JOBS)
    with ExitStack() as stack:
        served = start_all(
            stack,
            deployment,
            workers=1,
            JOBCACHE_JOBS=f"shared.builtin_jobs,{module}",
            PYTHONPATH=str(job_directory),
        )
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=10))
        shouted = deployment.submit(client, "shout", {"text": "from a worker"})
        echoed = deployment.submit(client, "echo", {"message": "built-in too"})

        record = wait_finished(client, shouted, timeout=30)
        assert record["status"] == "succeeded", record
        assert record["result"] == {"text": "FROM A WORKER", "letters": 11, "attempt": 1}
        assert wait_finished(client, echoed)["result"] == {"message": "built-in too"}


BAD_DECLARATIONS = {
    "an unknown option": (
        """
        from pydantic import BaseModel
        from shared.jobs import job

        class Text(BaseModel):
            text: str

        @job(tmeout=5)
        async def typo(parameters: Text, context: object) -> Text:
            return parameters
        """,
        ["typo", "unknown option tmeout", "timeout"],
    ),
    "parameters without a model": (
        """
        from shared.jobs import job

        @job()
        async def untyped(parameters, context) -> None:
            return None
        """,
        ["untyped", "pydantic model of its parameters"],
    ),
    "a function that is not async": (
        """
        from pydantic import BaseModel
        from shared.jobs import job

        class Text(BaseModel):
            text: str

        @job()
        def blocking(parameters: Text, context: object) -> Text:
            return parameters
        """,
        ["blocking", "async"],
    ),
    "a name as long as a job id": (
        """
        from pydantic import BaseModel
        from shared.jobs import job

        class Text(BaseModel):
            text: str

        @job(name="resize_and_watermark_a")
        async def resize(parameters: Text, context: object) -> Text:
            return parameters
        """,
        ["resize", "'resize_and_watermark_a'", "22 characters", "a job id"],
    ),
    "a module that fails to import": (
        """
        import a_package_nobody_installed
        """,
        ["cannot import", "ModuleNotFoundError", "a_package_nobody_installed"],
    ),
    "a module with no job": (
        """
        VALUE = 1
        """,
        ["declares no job type"],
    ),
}


@pytest.mark.parametrize("case", BAD_DECLARATIONS, ids=list(BAD_DECLARATIONS))
def test_a_bad_job_module_is_refused_naming_the_module_and_the_job(
    job_directory: Path, case: str
) -> None:
    text, named = BAD_DECLARATIONS[case]
    module = write_module(job_directory, text)
    with pytest.raises(ConfigurationError) as refused:
        load_catalog([module])
    message = str(refused.value)
    assert message.startswith("JOBCACHE_JOBS"), message
    for part in [module, *named]:
        assert part in message, message


def test_two_job_types_of_one_name_are_refused_naming_both_modules(job_directory: Path) -> None:
    first = write_module(job_directory, TEAM_JOBS)
    second = write_module(job_directory, TEAM_JOBS)
    with pytest.raises(ConfigurationError) as refused:
        load_catalog([first, second])
    message = str(refused.value)
    assert "'shout'" in message and first in message and second in message, message


@pytest.mark.processes
@pytest.mark.parametrize("process", ["api", "worker"])
def test_a_process_whose_job_module_cannot_be_imported_exits_naming_it(
    process: str, tmp_path: Path
) -> None:
    environment = {
        "CACHE_BACKEND": "redis",
        "JOBCACHE_JOBS": "shared.builtin_jobs,no_such_team_module",
    }
    command = api_command(free_port()) if process == "api" else worker_command()

    exited = run_until_exit(process, command, child_environment(environment), tmp_path / "o.log")

    assert exited.code != 0, exited.output
    assert "JOBCACHE_JOBS" in exited.output
    assert "no_such_team_module" in exited.output
    # One line says what to fix; no traceback follows it.
    assert "Traceback" not in exited.output, exited.output


@pytest.mark.processes
def test_at_debug_level_the_api_shows_the_traceback_of_why_it_cannot_start(
    tmp_path: Path,
) -> None:
    environment = {"JOBCACHE_JOBS": "no_such_team_module", "LOG_LEVEL": "DEBUG"}
    command = api_command(free_port())

    exited = run_until_exit("api", command, child_environment(environment), tmp_path / "o.log")

    assert exited.code != 0, exited.output
    assert "Traceback" in exited.output and "no_such_team_module" in exited.output


MODULE_OF_RESULT = """
from pydantic import BaseModel

from shared.jobs import JobContext, job


class Parameters(BaseModel):
    {field}: str


class Result(BaseModel):
    {field}: str


@job(name="{name}")
async def run(parameters: Parameters, context: JobContext) -> Result:
    return Result({field}=parameters.{field})
"""


def test_two_modules_models_of_one_name_each_keep_their_own_schema(job_directory: Path) -> None:
    """Two modules may both call their models `Parameters` and `Result`: each job type's
    routes document its own (a client generated from the schema reads each job's result as
    its own type)."""
    modules = [
        write_module(job_directory, MODULE_OF_RESULT.format(name=name, field=field))
        for name, field in (("first", "left"), ("second", "right"))
    ]
    settings = settings_for_test(jobcache_jobs=",".join(modules))
    app = create_app(settings)
    install_submit_routes(app, load_catalog(settings.job_modules), settings)
    schema = app.openapi()
    components = schema["components"]["schemas"]

    def component(reference: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = components[reference["$ref"].rpartition("/")[2]]
        return found

    for name, field in (("first", "left"), ("second", "right")):
        operation = schema["paths"][f"/jobs/{name}"]["post"]
        body = component(operation["requestBody"]["content"]["application/json"]["schema"])
        assert list(body["properties"]) == [field], body
        record = component(operation["responses"]["202"]["content"]["application/json"]["schema"])
        [result, null] = record["properties"]["result"]["anyOf"]
        assert null == {"type": "null"}
        assert list(component(result)["properties"]) == [field]
        batch = schema["paths"][f"/jobs/{name}/batch"]["post"]["responses"]["202"]
        jobs = component(batch["content"]["application/json"]["schema"])["properties"]["jobs"]
        assert component(jobs["items"]) == record
