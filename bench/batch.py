"""Issue 14's batch benchmark: jobs per second end to end through POST /jobs/echo/batch over
HTTP with one jobcache worker, next to bare tuned arq's library enqueue with one tuned arq
worker, in the same run, as real processes on a private Redis.

    .venv/bin/python -m bench.batch [--jobs 10000] [--batch 500] [--rounds 3] [--verbose]

Each round times, for each system, the submission of `--jobs` echo jobs until every one of
them has finished: jobcache gets them in batches of `--batch` (BATCHES_IN_FLIGHT requests at
once), bare arq through `ArqRedis.enqueue_job`, one job per call (CONCURRENCY calls at once).
A job has finished when its worker has taken it off the queue (arq's `finish_job`, which both
workers run after the job's end), so the clock stops when both queues are empty. The systems
alternate within a round and swap order each round, so that a machine that gets busier shifts
both alike; the figures are each system's median round, and the ratio is jobcache's to arq's.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import redis.asyncio

from bench.http_client import HttpError, LoopbackHttp
from bench.jobs import Run, WorkerKind, bare_arq, set_stage
from bench.processes import ProcessGroup, run_benchmark
from bench.report import PhaseStats, phase_details
from bench.workloads import EchoJobs

JOBCACHE = "jobcache batch HTTP"
ARQ = "bare arq tuned"
BATCHES_IN_FLIGHT = 4
"""Batch requests sent at once to jobcache."""
CONCURRENCY = 100
"""`enqueue_job` calls in flight at once for bare arq (bench/jobs.py's throughput setting)."""
WARM_UP_JOBS = 1000
DRAIN_POLL = 0.002
"""Seconds between two looks at whether a queue is empty."""
DRAIN_TIMEOUT = 300.0

Submit = Callable[[int], Awaitable[None]]
"""Submits this many jobs and returns once all are queued."""


async def drained(queue_redis: redis.asyncio.Redis, queue_key: str) -> None:
    """Wait until the queue is empty: every job on it has finished."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while await queue_redis.zcard(queue_key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue_key} still holds jobs after {DRAIN_TIMEOUT:g}s")
        await asyncio.sleep(DRAIN_POLL)


def jobcache_batches(http: LoopbackHttp, batch: int) -> Submit:
    """POST /jobs/echo/batch, `batch` jobs a request, BATCHES_IN_FLIGHT requests at once."""

    async def submit(count: int) -> None:
        slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)

        async def post(first: int) -> None:
            body = [{"message": f"job {number}"} for number in range(first, first + batch)]
            async with slots:
                status, answer = await http.post("/jobs/echo/batch", body[: count - first])
            if status != 202:
                raise HttpError(f"POST /jobs/echo/batch answered {status}: {answer}")

        async with asyncio.TaskGroup() as posts:
            for first in range(0, count, batch):
                posts.create_task(post(first))

    return submit


def arq_enqueues(jobs: EchoJobs[Any]) -> Submit:
    """`enqueue_job('echo', message)` per job, CONCURRENCY calls at once."""

    async def submit(count: int) -> None:
        slots = asyncio.Semaphore(CONCURRENCY)

        async def enqueue(number: int) -> None:
            async with slots:
                await jobs.submit(f"job {number}")

        async with asyncio.TaskGroup() as enqueues:
            for number in range(count):
                enqueues.create_task(enqueue(number))

    return submit


async def timed_round(
    run: Run, kind: WorkerKind, submit: Submit, count: int
) -> tuple[float, Counter[str], dict[str, float]]:
    """Jobs per second from the first submit until the queue is empty, with one worker of
    this kind (warmed up first), and the Redis commands and CPU meanwhile."""
    async with run.workers(kind, 1):
        await submit(WARM_UP_JOBS)
        await drained(run.queue_redis, kind.queue_name)

        async def work() -> float:
            started = time.perf_counter()
            await submit(count)
            await drained(run.queue_redis, kind.queue_name)
            return time.perf_counter() - started

        seconds, counts, cpu = await run.counted(work())
    return count / seconds, counts, cpu


async def bench(options: argparse.Namespace, group: ProcessGroup) -> str:
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        stage = await set_stage(stack, options, group)
        run, settings = stage.run, stage.settings
        http = LoopbackHttp("127.0.0.1", stage.api_port, BATCHES_IN_FLIGHT)
        stack.push_async_callback(http.close)
        arq = await bare_arq(stack, stage.redis_port, stage.namespace, tuned=True)
        async with arq.open_jobs() as arq_jobs:
            contenders = {
                JOBCACHE: (stage.workers, jobcache_batches(http, options.batch)),
                ARQ: (arq.workers, arq_enqueues(arq_jobs)),
            }
            rates: dict[str, list[float]] = {JOBCACHE: [], ARQ: []}
            for number in range(options.rounds):
                order = (JOBCACHE, ARQ) if number % 2 == 0 else (ARQ, JOBCACHE)
                for name in order:
                    kind, submit = contenders[name]
                    rate, counts, cpu = await timed_round(run, kind, submit, options.jobs)
                    rates[name].append(rate)
                    phase = f"{name}, round {number + 1}"
                    run.phases[phase] = PhaseStats(counts, cpu, options.jobs, "/job")
                    print(f"{phase}: {rate:,.0f} jobs/s", file=sys.stderr)
        server_info = await run.queue_redis.info("server")
    return report(
        rates[JOBCACHE],
        rates[ARQ],
        setup={
            "jobs": options.jobs,
            "batch": options.batch,
            "batches in flight": BATCHES_IN_FLIGHT,
            "arq enqueues in flight": CONCURRENCY,
            "rounds": options.rounds,
            "worker concurrency": settings.worker_concurrency,
            "redis": server_info["redis_version"],
            "cores": os.cpu_count() or 0,
            "run seconds": round(time.monotonic() - started),
        },
        phases=run.phases if options.verbose else None,
    )


def report(
    jobcache: list[float],
    arq: list[float],
    *,
    setup: dict[str, Any],
    phases: dict[str, PhaseStats] | None,
) -> str:
    ours, theirs = statistics.median(jobcache), statistics.median(arq)
    ratio = ours / theirs
    lines = [
        ", ".join(f"{name} {value}" for name, value in setup.items()),
        "",
        f"jobcache, POST /jobs/echo/batch over HTTP, 1 worker: {ours:,.0f} jobs/s "
        f"(rounds: {', '.join(f'{rate:,.0f}' for rate in jobcache)})",
        f"bare tuned arq, enqueue_job, 1 worker:            {theirs:,.0f} jobs/s "
        f"(rounds: {', '.join(f'{rate:,.0f}' for rate in arq)})",
        f"ratio jobcache / bare tuned arq: {ratio:.2f} (target >= 1.0: "
        f"{'met' if ratio >= 1.0 else 'NOT met'})",
    ]
    if phases is not None:
        lines += phase_details(phases)
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per round (10000)")
    parser.add_argument("--batch", type=int, default=500, help="jobs per batch request (500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each system (3)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also list each round's Redis commands and each process's CPU per job",
    )
    options = parser.parse_args(argv)
    if options.jobs < 1 or not 1 <= options.batch <= 1000 or options.rounds < 1:
        parser.error("--jobs and --rounds must be at least 1, --batch between 1 and 1000")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(bench, parse_arguments(argv))


if __name__ == "__main__":
    sys.exit(main())
