"""Scheduled job types (`@job(schedule=...)`): each due time runs once, however many workers
run, as an ordinary job that any API key may read; GET /schedules shows what is next and what
ran last; a due time no worker reached in time is never run late."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from pydantic import BaseModel

from shared.backend import Backend, Role, open_backend
from shared.catalog import Catalog
from shared.errors import ConfigurationError
from shared.jobs import JobContext, job
from shared.keys import Keys
from shared.metrics import Metrics
from shared.overview.memory import MemoryOverview
from shared.queue.memory import MemoryQueue
from shared.schedules import CLAIM_TTL, LATE_LIMIT, MemoryScheduleBook, ScheduleBook
from shared.schedules.redis import RedisScheduleBook
from tests.conftest import client_for, eventually, settings_for_test, write_module
from tests.deployments import (
    CACHE_DB,
    FINISHED,
    QUEUE_DB,
    REDIS_HOST,
    REDIS_PORT,
    Deployment,
    redis_client,
    start_all,
)
from tests.processes import wait_for
from worker import scheduler as scheduler_module
from worker.scheduler import Scheduler

EVERY_SECOND = "* * * * * *"
ALICE = "alice-0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"
BOB = "bob-9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c"

SCHEDULED_JOBS = '''
"""A team's job type that runs every second on its own."""

from pydantic import BaseModel

from shared.jobs import JobContext, job


class Greeting(BaseModel):
    name: str


class Greeted(BaseModel):
    text: str


@job(schedule="* * * * * *", schedule_parameters={"name": "cron"})
async def greet(parameters: Greeting, context: JobContext) -> Greeted:
    return Greeted(text=f"hello, {parameters.name}")
'''


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def due_seconds(after: datetime, until: datetime) -> set[datetime]:
    """The due times of an every-second schedule in (after, until]."""
    first = after.replace(microsecond=0) + timedelta(seconds=1)
    return {
        first + timedelta(seconds=step) for step in range(int((until - first).total_seconds()) + 1)
    }


async def test_a_scheduled_job_runs_every_second_in_the_local_mode_readable_by_any_key(
    job_directory: Path, namespace: str
) -> None:
    module = write_module(job_directory, SCHEDULED_JOBS)
    settings = settings_for_test(
        cache_namespace=namespace, cpu_workers=1, jobcache_jobs=module, api_keys=f"{ALICE},{BOB}"
    )
    async with client_for(settings) as client:

        async def finished_runs() -> list[dict[str, Any]] | None:
            state = await client.get("/dashboard/state", headers=bearer(ALICE))
            assert state.status_code == 200, state.text
            runs = []
            for summary in state.json()["recent"]:
                record = await client.get(f"/jobs/{summary['id']}", headers=bearer(BOB))
                assert record.status_code == 200, record.text
                runs.append(record.json())
            done = [run for run in runs if run["status"] in FINISHED]
            return done if len(done) >= 2 else None

        runs = await eventually(finished_runs, within=10)
        for run in runs:
            assert run["name"] == "greet"
            assert run["status"] == "succeeded", run
            assert run["result"] == {"text": "hello, cron"}
            assert moment(run["scheduled_for"]).microsecond == 0
        assert len({run["scheduled_for"] for run in runs}) == len(runs), "a due time ran twice"

        run_path = f"/jobs/{runs[0]['id']}"
        waited = await client.get(run_path, params={"wait": 1}, headers=bearer(ALICE))
        assert waited.status_code == 200, waited.text
        streamed = await client.get(f"{run_path}/events", headers=bearer(ALICE))
        assert streamed.status_code == 200, streamed.text
        assert "event: succeeded" in streamed.text
        cancel = await client.post(f"{run_path}/cancel", headers=bearer(ALICE))
        assert cancel.status_code == 404, "any key reads a scheduled run, none cancels it"
        delete = await client.delete(run_path, headers=bearer(ALICE))
        assert delete.status_code == 404, "nor deletes it"
        assert (await client.get(run_path, headers=bearer(ALICE))).status_code == 200
        assert (await client.get("/schedules")).status_code == 401

        asked = datetime.now(UTC)
        listed = await client.get("/schedules", headers=bearer(BOB))
        answered = datetime.now(UTC)
        assert listed.status_code == 200, listed.text
        [schedule] = listed.json()
        assert schedule["name"] == "greet"
        assert schedule["schedule"] == EVERY_SECOND
        assert schedule["queue"] == "default"
        assert schedule["parameters"] == {"name": "cron"}
        assert asked < moment(schedule["next_due_at"]) <= answered + timedelta(seconds=1)
        assert schedule["last_run"] is not None, schedule
        last = await client.get(f"/jobs/{schedule['last_run']['job_id']}", headers=bearer(ALICE))
        assert last.status_code == 200, last.text
        assert last.json()["scheduled_for"] == schedule["last_run"]["due_at"]
        assert "/schedules" in (await client.get("/openapi.json")).json()["paths"]


@pytest.mark.processes
def test_two_workers_run_each_due_time_exactly_once(
    job_directory: Path, deployment: Deployment
) -> None:
    module = write_module(job_directory, SCHEDULED_JOBS)
    runs: dict[str, dict[str, Any]] = {}
    spawned = datetime.now(UTC)
    try:
        with ExitStack() as stack:
            served = start_all(
                stack, deployment, workers=2, JOBCACHE_JOBS=module, PYTHONPATH=str(job_directory)
            )
            both_ready = datetime.now(UTC)  # each due time from here on has two schedulers
            window_end = both_ready + timedelta(seconds=4)
            client = stack.enter_context(httpx.Client(base_url=served.url, timeout=10))

            def past_the_window() -> bool:
                """Collect the runs; true once the schedulers have run a due time after the
                window and every run in it has finished."""
                for summary in client.get("/dashboard/state").json()["recent"]:
                    known = runs.get(summary["id"])
                    if known is None or known["status"] not in FINISHED:
                        record = client.get(f"/jobs/{summary['id']}")
                        assert record.status_code == 200, record.text
                        runs[summary["id"]] = record.json()
                due = [moment(run["scheduled_for"]) for run in runs.values()]
                in_window = [run for run in runs.values() if due_by(run, window_end)]
                return any(at > window_end + timedelta(seconds=1) for at in due) and all(
                    run["status"] in FINISHED for run in in_window
                )

            wait_for(past_the_window, timeout=20, interval=0.2, what="runs past the window")
    finally:
        deployment.job_ids.extend(recent_job_ids(deployment))

    due = sorted(moment(run["scheduled_for"]) for run in runs.values())
    shown = [at.isoformat() for at in due]
    assert len(set(due)) == len(due), f"a due time ran twice: {shown}"
    assert due == [due[0] + timedelta(seconds=step) for step in range(len(due))], (
        f"a due time was skipped: {shown}"
    )
    assert spawned < due[0] <= both_ready + timedelta(seconds=1), "runs begin with a worker"
    ran_in_window = {at for at in due if both_ready < at <= window_end}
    assert ran_in_window == due_seconds(both_ready, window_end)
    in_window = [run for run in runs.values() if due_by(run, window_end)]
    assert all(run["status"] == "succeeded" for run in in_window), in_window
    assert all(run["result"] == {"text": "hello, cron"} for run in in_window), in_window


def due_by(run: dict[str, Any], end: datetime) -> bool:
    return moment(run["scheduled_for"]) <= end


def recent_job_ids(deployment: Deployment) -> list[str]:
    """Every job the deployment's schedulers submitted (for the clean-up of arq's keys): the
    open list of jobs, which no key owns."""
    with redis_client(CACHE_DB) as client:
        return [
            str(job_id) for job_id in client.zrange(Keys(deployment.name).job_list(None), 0, -1)
        ]


@asynccontextmanager
async def schedule_book(kind: str, namespace: str) -> AsyncIterator[ScheduleBook]:
    if kind == "memory":
        yield MemoryScheduleBook()
        return
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=QUEUE_DB)
    try:
        yield RedisScheduleBook(client, Keys(namespace))
    finally:
        created = [key async for key in client.scan_iter(match=f"{namespace}:schedule:*")]
        if created:
            await client.delete(*created)
        await client.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_one_due_time_is_claimed_by_one_holder_only(kind: str, namespace: str) -> None:
    due = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    later = due + timedelta(seconds=1)
    async with schedule_book(kind, namespace) as book:
        claims = await asyncio.gather(
            *(book.claim("report", due, f"worker-{number}") for number in range(4))
        )
        assert sorted(claims) == [False, False, False, True]
        assert not await book.claim("report", due, "worker-0"), "a due time is claimed once"
        assert await book.claim("report", later, "worker-1"), "the next due time is free"
        assert await book.claim("other", due, "worker-2"), "each job type has its own claims"

        assert await book.last_runs(["report", "other"]) == {"report": None, "other": None}
        await book.note_run("report", due, "first-job")
        await book.note_run("report", later, "second-job")
        last_runs = await book.last_runs(["report", "other"])
        assert last_runs["other"] is None
        assert last_runs["report"] is not None
        assert (last_runs["report"].job_id, last_runs["report"].due_at) == ("second-job", later)

    if kind == "redis":
        with redis_client(QUEUE_DB) as client:
            assert not client.exists(Keys(namespace).schedule_claim("report", due))


async def test_a_claim_on_redis_outlives_the_late_limit(namespace: str) -> None:
    due = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with schedule_book("redis", namespace) as book:
        assert await book.claim("report", due, "worker-0")
        with redis_client(QUEUE_DB) as client:
            lives = client.pttl(Keys(namespace).schedule_claim("report", due)) / 1000
            assert client.get(Keys(namespace).schedule_claim("report", due)) == "worker-0"
    assert LATE_LIMIT < lives <= CLAIM_TTL


class Tick(BaseModel):
    label: str


class Ticked(BaseModel):
    label: str


@job(schedule=EVERY_SECOND, schedule_parameters={"label": "tick"})
async def tick(parameters: Tick, context: JobContext) -> Ticked:
    return Ticked(label=parameters.label)


@asynccontextmanager
async def memory_backend(namespace: str) -> AsyncIterator[Backend]:
    """The local mode's backend with no worker taking its jobs: they stay queued, for the test
    to read."""

    @asynccontextmanager
    async def no_worker(
        backend: Backend, queue: MemoryQueue, overview: MemoryOverview
    ) -> AsyncIterator[None]:
        yield

    settings = settings_for_test(cache_backend="local", cache_namespace=namespace)
    async with open_backend(settings, Role.API, in_process_worker=no_worker) as backend:
        yield backend


async def scheduled_runs(backend: Backend) -> list[datetime]:
    ids = [entry.job_id for entry in await backend.listing.older(None, None, 100)]
    return sorted(
        record.scheduled_for
        for record in await backend.records.get_many(ids)
        if record.scheduled_for is not None
    )


SHORT_LATE_LIMIT = 0.8
STALL = 3.5


async def test_a_scheduler_never_runs_a_due_time_it_reached_late(
    namespace: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = Catalog([tick])
    async with memory_backend(namespace) as backend:
        assert tick.schedule is not None
        scheduler = Scheduler(catalog, backend, "worker-0", Metrics(catalog))
        before_start = datetime.now(UTC)
        scheduler.start()
        after_start = datetime.now(UTC)
        try:
            first = (await eventually(lambda: scheduled_runs(backend), within=5))[0]
            assert before_start < first <= tick.schedule.next_after(after_start), (
                "a scheduler runs the next due time after its start, not one that passed"
            )

            monkeypatch.setattr(scheduler_module, "LATE_LIMIT", SHORT_LATE_LIMIT)
            with caplog.at_level(logging.WARNING, logger="worker.scheduler"):
                stall_began = datetime.now(UTC)
                # A stalled worker: its event loop blocked past three due times, two of them
                # well beyond the (shortened) late limit.
                time.sleep(STALL)  # noqa: ASYNC251 (the stall itself, not a wait)
                stall_ended = datetime.now(UTC)

                async def ran_after_the_stall() -> bool:
                    return (await scheduled_runs(backend))[-1] > stall_ended

                await eventually(ran_after_the_stall, within=5)
        finally:
            await scheduler.close()
        runs = await scheduled_runs(backend)

    too_late = stall_ended - timedelta(seconds=SHORT_LATE_LIMIT)
    missed = [due.isoformat() for due in runs if stall_began < due < too_late]
    assert missed == [], f"due times reached late ran anyway: {missed}"
    warnings = [entry.getMessage() for entry in caplog.records if "late" in entry.getMessage()]
    assert len(warnings) == 1, f"one warning for the whole stall: {warnings}"
    assert len(set(runs)) == len(runs)


BAD_SCHEDULES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "not a cron expression": (
        {"schedule": "every five minutes", "schedule_parameters": {"label": "x"}},
        ["schedule", "fields"],
    ),
    "a field out of range": (
        {"schedule": "61 * * * *", "schedule_parameters": {"label": "x"}},
        ["schedule", "61 * * * *"],
    ),
    "parameters the model refuses": (
        {"schedule": "*/5 * * * *", "schedule_parameters": {"lable": "x"}},
        ["schedule_parameters", "Tick", "label", "lable"],
    ),
    "parameters without a schedule": (
        {"schedule_parameters": {"label": "x"}},
        ["schedule_parameters without a schedule"],
    ),
}


@pytest.mark.parametrize("case", BAD_SCHEDULES, ids=list(BAD_SCHEDULES))
def test_a_bad_schedule_is_refused_when_declared_naming_the_job(case: str) -> None:
    options, named = BAD_SCHEDULES[case]

    async def nightly_report(parameters: Tick, context: JobContext) -> Ticked:
        return Ticked(label=parameters.label)

    with pytest.raises(ConfigurationError) as refused:
        job(**options)(nightly_report)
    message = str(refused.value)
    for part in ["nightly_report", *named]:
        assert part in message, message
