"""The benchmark's two workloads (sequential latency, bounded-concurrency throughput) and the
three ways of running an `echo` job they drive: jobcache over HTTP, jobcache's own enqueue path
in this process, and bare arq.
"""

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import redis.asyncio
from arq.connections import ArqRedis
from arq.jobs import Job

from bench.http_client import HttpError, LoopbackHttp
from shared.backend import Role, open_backend
from shared.builtin_jobs import echo as ECHO
from shared.events import JobEvents
from shared.keys import new_job_id
from shared.queue import JobQueue, QueuedJob
from shared.records import JobRecord, JobStatus, RecordStore
from shared.settings import Settings

RESULT_TIMEOUT = 120.0
"""How long one job may take before the benchmark gives up on the run."""
WAIT_SECONDS = 10
"""The `?wait` of each GET /jobs/{id}."""
REPOLL_SECONDS = 0.005
"""Pause before asking again when a GET ?wait came back with an unfinished record."""

Handle = TypeVar("Handle")


class JobFailed(RuntimeError):
    pass


class EchoJobs(Protocol[Handle]):
    """Submits `echo` jobs and reads their results, through one of the systems compared."""

    async def submit(self, message: str) -> Handle: ...

    async def result(self, handle: Handle) -> str:
        """The echoed message, once the job has succeeded."""
        ...


@dataclass(frozen=True)
class Stages:
    """Where one job's latency went, from the client's clock and the record's timestamps (one
    machine, one clock): seconds from the client sending the POST to the api's `created_at`,
    to the worker's `started_at`, to `finished_at`, and to the client holding the result."""

    to_created: float
    to_started: float
    to_finished: float
    to_client: float


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


class HttpJobs:
    """jobcache as a client sees it: POST /jobs/echo, then GET /jobs/{id}?wait=..."""

    def __init__(self, http: LoopbackHttp) -> None:
        self._http = http
        self._sent_at: dict[str, float] = {}
        self.unfinished_reads = 0
        """GETs that came back before the job finished (a `?wait` that did not hold)."""
        self.stages: list[Stages] = []
        """One entry per result read since this list was last emptied."""

    async def submit(self, message: str) -> str:
        sent_at = time.time()
        status, record = await self._http.post("/jobs/echo", {"message": message})
        if status != 202:
            raise HttpError(f"POST /jobs/echo answered {status}: {record}")
        job_id: str = record["id"]
        self._sent_at[job_id] = sent_at
        return job_id

    def _record_stages(self, record: dict[str, Any]) -> None:
        created, started, finished = (
            timestamp(record[moment]) for moment in ("created_at", "started_at", "finished_at")
        )
        sent_at = self._sent_at.pop(record["id"])
        self.stages.append(
            Stages(created - sent_at, started - created, finished - started, time.time() - finished)
        )

    async def result(self, handle: str) -> str:
        deadline = time.monotonic() + RESULT_TIMEOUT
        while True:
            status, record = await self._http.get(f"/jobs/{handle}?wait={WAIT_SECONDS}")
            if status != 200:
                raise HttpError(f"GET /jobs/{handle} answered {status}: {record}")
            if record["status"] == JobStatus.SUCCEEDED:
                self._record_stages(record)
                message: str = record["result"]["message"]
                return message
            if record["status"] == JobStatus.FAILED:
                raise JobFailed(f"job {handle} failed: {record['error']}")
            self.unfinished_reads += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {handle} still {record['status']} after {RESULT_TIMEOUT}s")
            await asyncio.sleep(REPOLL_SECONDS)


class InternalJobs:
    """jobcache without HTTP: what POST /jobs/echo does (a queued record, then the queue) and
    what `?wait` does (watch the job's events, read the record), called in this process."""

    def __init__(self, records: RecordStore, queue: JobQueue, events: JobEvents) -> None:
        self._records = records
        self._queue = queue
        self._events = events

    async def submit(self, message: str) -> str:
        record = JobRecord(id=new_job_id(), name=ECHO.name, max_attempts=ECHO.max_attempts)
        await self._records.put(record, self._records.ttl_for(ECHO.result_ttl), announce=False)
        await self._queue.enqueue(QueuedJob.of(record, {"message": message}, ECHO.queue))
        return record.id

    async def result(self, handle: str) -> str:
        deadline = time.monotonic() + RESULT_TIMEOUT
        with self._events.watch(handle) as updates:
            record = await self._records.get(handle)
            while record is None or not record.status.finished:
                update = await updates.next(deadline - time.monotonic())
                if update is None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {handle} unfinished after {RESULT_TIMEOUT}s")
                record = update or await self._records.get(handle)
        if record.status != JobStatus.SUCCEEDED:
            raise JobFailed(f"job {handle} failed: {record.error}")
        message: str = record.result["message"]
        return message


@asynccontextmanager
async def internal_jobs(settings: Settings) -> AsyncIterator[InternalJobs]:
    """The record store, queue and events of an api process, opened as the api opens them."""
    async with open_backend(settings, Role.API) as backend:
        yield InternalJobs(backend.records, backend.queue, backend.events)


class BareArqJobs:
    """Plain arq: `enqueue_job('echo', message)`, then `Job.result(poll_delay=...)`."""

    def __init__(self, pool: ArqRedis, result_poll_delay: float) -> None:
        self._pool = pool
        self._result_poll_delay = result_poll_delay

    async def submit(self, message: str) -> Job:
        job = await self._pool.enqueue_job("echo", message)
        if job is None:
            raise RuntimeError("arq refused the job: its id already exists")
        return job

    async def result(self, handle: Job) -> str:
        result: str = await handle.result(
            timeout=RESULT_TIMEOUT, poll_delay=self._result_poll_delay
        )
        return result


@dataclass(frozen=True)
class Latencies:
    """Seconds from the start of each submit to its end, and to the result in hand."""

    submitted: list[float]
    finished: list[float]


def percentiles(samples: list[float]) -> dict[int, float]:
    """p50, p95 and p99 of the samples."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {50: cuts[49], 95: cuts[94], 99: cuts[98]}


async def measure_latency(jobs: EchoJobs[Handle], count: int, label: str) -> Latencies:
    """`count` jobs one after the other, each submitted once the previous result was read."""
    submitted: list[float] = []
    finished: list[float] = []
    for number in range(count):
        message = f"{label} latency {number}"
        started = time.perf_counter()
        handle = await jobs.submit(message)
        submitted.append(time.perf_counter() - started)
        result = await jobs.result(handle)
        finished.append(time.perf_counter() - started)
        check(result, message)
    return Latencies(submitted, finished)


async def measure_throughput(
    jobs: EchoJobs[Handle], count: int, concurrency: int, label: str
) -> float:
    """Seconds from the first submit to the last result read: all `count` jobs submitted with
    at most `concurrency` submits in flight, then all results read the same way."""
    limit = asyncio.Semaphore(concurrency)
    messages = [f"{label} throughput {number}" for number in range(count)]

    async def submit(message: str) -> Handle:
        async with limit:
            return await jobs.submit(message)

    async def read(handle: Handle, message: str) -> None:
        async with limit:
            check(await jobs.result(handle), message)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as submits:
        handles = [submits.create_task(submit(message)) for message in messages]
    async with asyncio.TaskGroup() as reads:
        for handle, message in zip(handles, messages, strict=True):
            reads.create_task(read(handle.result(), message))
    return time.perf_counter() - started


def check(result: str, message: str) -> None:
    if result != message:
        raise AssertionError(f"echo returned {result!r} for {message!r}")


class CommandStats:
    """Redis's own count of the commands it ran (INFO commandstats), since the last reset."""

    OWN_COMMANDS = ("config|resetstat", "info")
    """The benchmark's reset and read, left out of the counts."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    async def reset(self) -> None:
        await self._client.config_resetstat()

    async def read(self) -> Counter[str]:
        stats: dict[str, dict[str, Any]] = await self._client.info("commandstats")
        counts = Counter(
            {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
        )
        for own in self.OWN_COMMANDS:
            counts[own] -= 1
        return +counts  # drops the zero counts
