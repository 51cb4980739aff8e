"""The client library and its command line against real api processes: the sync `Client`
against uvicorn in the local mode, and against an api and a worker in the redis mode, where
the `jobcache` command runs as a user runs it."""

import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from jobcache_client import Client, Conflict, JobcacheError, JobStatus, NotFound, ValidationError
from jobcache_client.cli import main as command_line
from tests.deployments import Deployment, start_all
from tests.processes import BIN, Api, api, child_environment, refusing_port

pytestmark = pytest.mark.processes


@pytest.fixture
def local_api(tmp_path: Path, namespace: str) -> Iterator[Api]:
    """uvicorn serving the api in the local mode: no Redis, the api runs the jobs itself."""
    environment = child_environment(
        {"CACHE_BACKEND": "local", "CACHE_NAMESPACE": namespace, "CPU_WORKERS": "1"}
    )
    with api(environment, tmp_path / "api.log") as served:
        yield served


def test_the_sync_client_drives_the_local_mode(local_api: Api) -> None:
    with Client(local_api.url) as client:
        job = client.submit("echo", {"message": "hi"})
        assert client.wait(job.id, timeout=10).result == {"message": "hi"}
        assert client.get(job.id).status is JobStatus.SUCCEEDED

        sleeping = client.submit("sleep", {"seconds": 1.0})
        events = client.events(sleeping.id)
        first = next(events)
        assert not first.finished, "the stream hands out events as they happen"
        rest = list(events)
        assert rest[-1].status is JobStatus.SUCCEEDED
        assert any(each.progress and each.progress.current > 0 for each in rest)

        with pytest.raises(Conflict):
            client.cancel(job.id)
        client.delete(job.id)
        with pytest.raises(NotFound):
            client.get(job.id)
        with pytest.raises(NotFound) as unknown:
            client.submit("nope", {})
        assert unknown.value.known_job_types and "echo" in unknown.value.known_job_types
        with pytest.raises(ValidationError) as invalid:
            client.submit("sleep", {"seconds": "long"})
        assert [issue.loc for issue in invalid.value.issues] == [("body", "seconds")]


def test_an_operator_pauses_and_resumes_a_queue_with_the_client_and_the_command(
    tmp_path: Path, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    environment = child_environment(
        {
            "CACHE_BACKEND": "local",
            "CACHE_NAMESPACE": namespace,
            "CPU_WORKERS": "1",
            "API_KEYS": "user-key",
            "ADMIN_API_KEYS": "admin-key",
        }
    )
    with api(environment, tmp_path / "api.log") as served:
        with Client(served.url, "admin-key") as client:
            assert client.pause_queue("default")["paused"] is True
            job = client.submit("echo", {"message": "held"})
            assert {queue["name"]: queue["paused"] for queue in client.queues()} == {
                "default": True,
                "cpu": False,
            }
            assert client.get(job.id).status is JobStatus.QUEUED
        with Client(served.url, "user-key") as ordinary, pytest.raises(JobcacheError) as refused:
            ordinary.resume_queue("default")
        assert "admin" in str(refused.value)
        command = ["--url", served.url, "--api-key", "admin-key"]
        capsys.readouterr()
        assert command_line([*command, "queues", "resume", "default"]) == 0
        assert json.loads(capsys.readouterr().out)["paused"] is False
        assert command_line([*command, "queues"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [queue["paused"] for queue in listed] == [False, False]
        assert command_line([*command, "queues", "pause"]) == 2, "pause needs a name"
        with Client(served.url, "admin-key") as client:
            assert client.wait(job.id, timeout=10).result == {"message": "held"}


def test_submit_many_and_list_against_the_local_mode(local_api: Api) -> None:
    with Client(local_api.url) as client:
        jobs = client.submit_many("echo", [{"message": "a"}, {"message": "b"}])
        for job in jobs:
            client.wait(job.id, timeout=10)
        page = client.list(name="echo", limit=1)
        assert [job.id for job in page.jobs] == [jobs[1].id] and page.next is not None
        assert [job.id for job in client.iter_jobs()] == [jobs[1].id, jobs[0].id]


def run_cli(url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`jobcache ...` as a user runs it (the command the client's distribution installs), against
    the api at `url`, from outside the repository."""
    return subprocess.run(
        [str(BIN / "jobcache"), *arguments],
        cwd=tempfile.gettempdir(),
        env=child_environment({"JOBCACHE_URL": url}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def printed(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_client_and_its_command_line_drive_the_redis_mode(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1)
        client = stack.enter_context(Client(served.url))

        job = client.submit("text_stats", {"text": "a b a"})
        deployment.job_ids.append(job.id)
        finished = client.wait(job.id, timeout=15)
        assert finished.status is JobStatus.SUCCEEDED and finished.result["words"] == 3

        record = printed(run_cli(served.url, "submit", "echo", '{"message": "hi"}', "--wait"))
        deployment.job_ids.append(record["id"])
        assert (record["status"], record["result"]) == ("succeeded", {"message": "hi"})

        failing = client.submit("fail", {"message": "on purpose"})
        deployment.job_ids.append(failing.id)
        assert [each.status for each in client.events(failing.id)][-1] is JobStatus.FAILED
        page = printed(run_cli(served.url, "list", "--status", "failed"))
        assert [each["id"] for each in page["jobs"]] == [failing.id]
        assert page["jobs"][0]["error"] == "on purpose"

        lines = run_cli(served.url, "events", failing.id).stdout.splitlines()
        assert json.loads(lines[-1])["status"] == "failed"

        missing = run_cli(served.url, "get", "A" * 22)
        assert missing.returncode == 4
        assert missing.stderr.startswith("jobcache: 404 Not Found:")
        assert "Traceback" not in missing.stderr and missing.stdout == ""
        unknown = run_cli(served.url, "submit", "nope", "{}")
        assert unknown.returncode == 4
        assert unknown.stderr.count("known job types") == unknown.stderr.count("echo") == 1


def test_the_command_line_reports_an_api_that_refuses_connections_at_once() -> None:
    with refusing_port() as port:
        started = time.monotonic()
        refused = run_cli(f"http://127.0.0.1:{port}", "get", "A" * 22)
        elapsed = time.monotonic() - started
    assert refused.returncode == 3 and refused.stdout == ""
    assert refused.stderr.endswith("(tried 2 times): connection refused\n"), refused.stderr
    assert elapsed < 3, "one quick retry, not six tries over 12 s (the interpreter's start aside)"
