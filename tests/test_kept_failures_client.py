"""Running failed jobs again and deadlines from the client library (sync, against an api and a
worker on Redis; async, in-process) and the `jobcache` command line: `retry ID`,
`retry --failed --queue/--name/--since`, `submit --expires-in`; and a job that expires gives its
quota back."""

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest

from jobcache_client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    JobStatus,
    NotFound,
    ValidationError,
)
from tests.conftest import client_for, eventually, settings_in
from tests.deployments import Deployment, start_all
from tests.test_client_processes import printed, run_cli

USER = "user-key-of-the-retry-client-test-0123"
ADMIN = "admin-key-of-the-retry-client-test-4567"


@pytest.mark.processes
def test_the_client_and_command_line_run_failed_jobs_again_on_redis(
    deployment: Deployment,
) -> None:
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1, API_KEYS=USER, ADMIN_API_KEYS=ADMIN)
        user = stack.enter_context(Client(served.url, USER))
        admin = stack.enter_context(Client(served.url, ADMIN))
        failed = [user.submit("fail", {"message": f"broken {n}"}) for n in range(3)]
        deployment.job_ids.extend(job.id for job in failed)
        for job in failed:
            assert user.wait(job.id, timeout=30).status is JobStatus.FAILED

        again = user.retry(failed[0].id)
        assert again.status is JobStatus.QUEUED and again.id == failed[0].id
        assert again.previous_errors == ("broken 0",)
        ended = user.wait(failed[0].id, timeout=30)
        assert ended.status is JobStatus.FAILED, "it fails again: the job always does"
        assert ended.previous_errors == ("broken 0",)
        with pytest.raises(NotFound):
            admin.retry(failed[1].id)  # not the admin's own job
        with pytest.raises(Forbidden):
            user.retry_failed(queue="default")
        with pytest.raises(NotFound):
            admin.retry_failed(queue="nightly")

        environment_key = ("--api-key", USER)
        record = printed(run_cli(served.url, *environment_key, "retry", failed[1].id))
        assert record["status"] == "queued"
        assert record["previous_errors"] == ["broken 1"]
        user.wait(failed[1].id, timeout=30)
        busy = run_cli(served.url, *environment_key, "retry", "A" * 22)
        assert busy.returncode == 4

        since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        bulk = printed(
            run_cli(
                served.url,
                "--api-key",
                ADMIN,
                "retry",
                "--failed",
                "--name",
                "fail",
                "--since",
                since,
            )
        )
        assert (bulk["retried"], bulk["queue"], bulk["name"]) == (3, "default", "fail")
        for job in failed:
            assert user.wait(job.id, timeout=30).status is JobStatus.FAILED
        later = datetime.now(UTC) + timedelta(minutes=5)
        assert admin.retry_failed(queue="default", since=later).retried == 0
        usage = run_cli(served.url, "--api-key", ADMIN, "retry", "--failed")
        assert usage.returncode == 2 and "--queue" in usage.stderr

        expiring = printed(
            run_cli(
                served.url, *environment_key, "submit", "echo", '{"message": "hi"}',
                "--expires-in", "30", "--wait",
            )
        )  # fmt: skip
        deployment.job_ids.append(expiring["id"])
        assert expiring["status"] == "succeeded" and expiring["expires_at"] is not None
        refused = run_cli(served.url, *environment_key, "submit", "echo", "{}", "--expires-in", "0")
        assert refused.returncode == 6 and "expires_in" in refused.stderr


async def test_the_async_client_retries_and_an_expired_job_gives_its_quota_back(
    namespace: str,
) -> None:
    settings = settings_in(
        "local", namespace, worker_concurrency=1, api_keys=USER, quota_jobs_in_flight=3
    )
    async with (
        client_for(settings) as http,
        AsyncClient("http://jobcache.test", USER, http_client=http) as client,
    ):
        first = await client.submit("sleep", {"seconds": 1.0})
        late = await client.submit("echo", {"message": "late"}, expires_in=0.2)
        assert late.expires_at is not None
        busy = await client.submit("sleep", {"seconds": 4.0})

        async def expired() -> bool:
            return (await client.get(late.id)).status is JobStatus.EXPIRED

        await eventually(expired, within=30)
        assert (await client.wait(first.id, timeout=30)).status is JobStatus.SUCCEEDED
        # In flight now: only the 4-second sleep. Two more fit in a quota of 3 only if
        # the expired job gave its slot back.
        more = [await client.submit("echo", {"message": str(n)}) for n in range(2)]
        assert len(more) == 2
        with pytest.raises(ValidationError):
            await client.submit("echo", {"message": "x"}, expires_in=-1)
        again = await client.retry(late.id)
        assert again.status is JobStatus.QUEUED
        with pytest.raises(Conflict):
            await client.retry(late.id)
        await client.cancel(busy.id)
        done = await client.wait(late.id, timeout=30)
        assert done.status is JobStatus.SUCCEEDED
        assert done.previous_errors == ("not started before its deadline (expires_in)",)
