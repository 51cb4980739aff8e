"""Issue 4's benchmark: jobcache against bare arq, as real processes on a private Redis.

    .venv/bin/python -m bench.jobs [--jobs 3000] [--latency-jobs 200] [--verbose]
                                   [--phases latency,throughput,idle,sequential]

It starts its own redis-server on a free loopback port and jobcache's api, then measures, for
jobcache (over HTTP, and its enqueue path in-process) and for bare arq (with arq's defaults,
and tuned): submit-to-result latency, throughput with 1 and 2 workers, Redis commands per job
(INFO commandstats) and the idle Redis load of 4 workers; it prints one table saying which
targets were met. The `sequential` phase (bench/sequential.py) runs jobs one at a time over
HTTP through jobcache's api (Redis and one worker; and the embedded mode) and through a bare
FastAPI app answering the same routes with no work (bench/bare_api.py); `--phases` picks
the phases to run. Each phase starts the workers it needs and stops them after, and the
throughput runs of the systems alternate, so that a machine that gets busier during the run
shifts all of them alike: only the ratios within a run mean anything.
"""

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio
from arq.connections import RedisSettings, create_pool

from bench import bare_arq_worker
from bench.http_client import LoopbackHttp
from bench.processes import (
    ProcessGroup,
    run_benchmark,
    start_api,
    start_redis,
    start_workers,
    wait_for_api,
    wait_for_redis,
)
from bench.report import Figures, PhaseStats, render
from bench.sequential import BARE, JUDGED, SequentialFigures, measure_sequential
from bench.workloads import (
    BareArqJobs,
    CommandStats,
    EchoJobs,
    HttpJobs,
    internal_jobs,
    measure_latency,
    measure_throughput,
)
from shared.catalog import DEFAULT_QUEUE
from shared.settings import Settings
from tests.processes import BIN, worker_command

PHASES = ("latency", "throughput", "idle", "sequential")
CONCURRENCY = 100
"""Submits (then result reads) in flight at once in the throughput workload."""
WORKER_COUNTS = (1, 2)
IDLE_WORKERS = 4
IDLE_SETTLE_SECONDS = 2.0
"""Quiet time before the idle count starts: longer than jobcache's fallback poll (1 s)."""
WARM_UP_JOBS = 200
ARQ_DEFAULT_RESULT_POLL = 0.5
"""`Job.result()`'s own default."""
ARQ_TUNED_RESULT_POLL = 0.005

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerKind:
    """How to start one kind of arq worker on the benchmark's Redis."""

    name: str
    command: tuple[str, ...]
    environment: dict[str, str]
    queue_name: str


@dataclass
class Contender:
    """One way of running `echo` jobs: its workers, its client and its figures."""

    name: str
    workers: WorkerKind
    open_jobs: Callable[[], AbstractAsyncContextManager[EchoJobs[Any]]]
    figures: Figures = field(default_factory=Figures)


@dataclass
class Run:
    """What every phase needs: the options, the processes and Redis's command counts."""

    options: argparse.Namespace
    group: ProcessGroup
    queue_redis: redis.asyncio.Redis
    stats: CommandStats
    phases: dict[str, PhaseStats] = field(default_factory=dict)
    """Every measured phase's Redis commands and CPU, for --verbose."""

    @asynccontextmanager
    async def workers(self, kind: WorkerKind, count: int) -> AsyncIterator[None]:
        """`count` workers of `kind`, each started and polling, stopped on exit."""
        started = await start_workers(
            self.group,
            count,
            name=kind.name,
            command=kind.command,
            settings=kind.environment,
            queue_name=kind.queue_name,
            queue_redis=self.queue_redis,
        )
        try:
            yield
        finally:
            self.group.stop(started)

    async def counted(self, work: Awaitable[T]) -> tuple[T, Counter[str], dict[str, float]]:
        """Run `work`; count the Redis commands run meanwhile and each process's CPU seconds."""
        await self.stats.reset()
        cpu_before = {**self.group.cpu_by_role(), "client": time.process_time()}
        value = await work
        cpu_after = {**self.group.cpu_by_role(), "client": time.process_time()}
        counts = await self.stats.read()
        cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after if role in cpu_before}
        return value, counts, cpu

    async def latency(self, contender: Contender) -> None:
        """Sequential jobs through one idle worker."""
        async with self.workers(contender.workers, 1), contender.open_jobs() as jobs:
            await warm_up(jobs, contender.name)
            if isinstance(jobs, HttpJobs):
                jobs.stages.clear()
            contender.figures.latency = await measure_latency(
                jobs, self.options.latency_jobs, contender.name
            )
            if isinstance(jobs, HttpJobs):
                contender.figures.stages = list(jobs.stages)

    async def throughput(self, contender: Contender, count: int) -> None:
        jobs_count = self.options.jobs
        async with self.workers(contender.workers, count), contender.open_jobs() as jobs:
            await warm_up(jobs, contender.name)
            seconds, counts, cpu = await self.counted(
                measure_throughput(jobs, jobs_count, CONCURRENCY, f"{contender.name} {count}")
            )
        phase = f"{contender.name}, {count} worker(s)"
        self.phases[phase] = PhaseStats(counts, cpu, jobs_count, "/job")
        contender.figures.throughput[count] = jobs_count / seconds
        contender.figures.commands_per_job[count] = counts.total() / jobs_count

    async def sequential(self, stage: "Stage") -> SequentialFigures:
        """Jobs one at a time over HTTP: jobcache's api in Redis mode with one worker, in the
        embedded mode, and the bare FastAPI app, each on one connection of its own."""
        embedded, embedded_port = start_api(
            self.group,
            {"CACHE_BACKEND": "local", "LOG_LEVEL": "WARNING", "JOBCACHE_ENV_FILE": ""},
            name="embedded-api",
        )
        bare, bare_port = start_api(self.group, {}, name="bare-api", app="bench.bare_api:app")
        try:
            await wait_for_api(embedded_port, embedded)
            await wait_for_api(bare_port, bare, health="/docs")
            clients = {
                JUDGED: LoopbackHttp("127.0.0.1", stage.api_port, 1),
                "jobcache HTTP (embedded)": LoopbackHttp("127.0.0.1", embedded_port, 1),
                BARE: LoopbackHttp("127.0.0.1", bare_port, 1),
            }
            async with self.workers(stage.workers, 1):
                figures = await measure_sequential(
                    clients,
                    self.options.sequential_jobs,
                    self.options.sequential_rounds,
                    self.counted,
                )
            for client in clients.values():
                await client.close()
        finally:
            self.group.stop([embedded, bare])
        self.phases.update(figures.phases)
        return figures

    async def idle_load(self, contender: Contender, what: str) -> None:
        """Redis commands per second with IDLE_WORKERS idle workers."""
        async with self.workers(contender.workers, IDLE_WORKERS):
            await asyncio.sleep(IDLE_SETTLE_SECONDS)
            started = time.perf_counter()
            _, counts, cpu = await self.counted(asyncio.sleep(self.options.idle_seconds))
            seconds = time.perf_counter() - started
        self.phases[f"{contender.name} idle ({what})"] = PhaseStats(counts, cpu, seconds, "/s")
        contender.figures.idle_commands_per_second = counts.total() / seconds


async def warm_up(jobs: EchoJobs[Any], label: str) -> None:
    """Open the connections of a throughput run and wake the workers before measuring."""
    await measure_throughput(jobs, WARM_UP_JOBS, CONCURRENCY, f"{label} warm-up")


def jobcache_settings(redis_port: int, namespace: str) -> Settings:
    """The settings of this run's api and workers; no `.env` file is read."""
    return Settings(
        _env_file=None,
        cache_backend="redis",
        redis_host="127.0.0.1",
        redis_port=redis_port,
        redis_password=None,
        redis_queue_db=0,
        redis_cache_db=1,
        cache_namespace=namespace,
        log_level="WARNING",
        # The same workers as tuned arq's: as many jobs at once per process.
        worker_concurrency=bare_arq_worker.TUNED_OPTIONS["max_jobs"],
    )


def jobcache_environment(settings: Settings) -> dict[str, str]:
    return {
        "CACHE_BACKEND": "redis",
        "REDIS_HOST": settings.redis_host,
        "REDIS_PORT": str(settings.redis_port),
        "REDIS_QUEUE_DB": str(settings.redis_queue_db),
        "REDIS_CACHE_DB": str(settings.redis_cache_db),
        "CACHE_NAMESPACE": settings.cache_namespace,
        "WORKER_CONCURRENCY": str(settings.worker_concurrency),
        "LOG_LEVEL": settings.log_level,
        "JOBCACHE_ENV_FILE": "",
    }


async def bare_arq(
    stack: AsyncExitStack, redis_port: int, namespace: str, tuned: bool
) -> Contender:
    """Plain arq workers and arq's own client, on a queue of their own."""
    variant = "tuned" if tuned else "default"
    queue_name = f"{namespace}-arq-{variant}:queue"
    workers = WorkerKind(
        f"arq-{variant}-worker",
        (str(BIN / "arq"), f"bench.bare_arq_worker.{'Tuned' if tuned else 'Default'}Settings"),
        {
            bare_arq_worker.REDIS_PORT_VARIABLE: str(redis_port),
            bare_arq_worker.QUEUE_VARIABLE: queue_name,
        },
        queue_name,
    )
    pool = await create_pool(
        RedisSettings(host="127.0.0.1", port=redis_port), default_queue_name=queue_name
    )
    stack.push_async_callback(pool.aclose)
    jobs = BareArqJobs(pool, ARQ_TUNED_RESULT_POLL if tuned else ARQ_DEFAULT_RESULT_POLL)
    return Contender(f"bare arq {variant}", workers, lambda: as_context(jobs))


@asynccontextmanager
async def as_context(jobs: EchoJobs[Any]) -> AsyncIterator[EchoJobs[Any]]:
    yield jobs


@dataclass(frozen=True)
class Stage:
    """What every benchmark sets up first: its Redis, the run's phases and jobcache's api,
    under a namespace of the run's own."""

    run: Run
    redis_port: int
    namespace: str
    settings: Settings
    workers: WorkerKind
    """jobcache's workers."""
    api_port: int


async def set_stage(
    stack: AsyncExitStack, options: argparse.Namespace, group: ProcessGroup
) -> Stage:
    """A private redis-server and one jobcache api for the whole run (idle, it sends Redis
    nothing); closed with `stack`, stopped with `group`."""
    server, redis_port = start_redis(group)
    queue_redis = redis.asyncio.Redis(host="127.0.0.1", port=redis_port)
    stack.push_async_callback(queue_redis.aclose)
    await wait_for_redis(queue_redis, server)
    namespace = f"bench-{secrets.token_hex(4)}"
    settings = jobcache_settings(redis_port, namespace)
    environment = jobcache_environment(settings)
    workers = WorkerKind(
        "jobcache-worker",
        tuple(worker_command()),
        environment,
        settings.keys.queue(DEFAULT_QUEUE),
    )
    api, api_port = start_api(group, environment)
    await wait_for_api(api_port, api)
    run = Run(options, group, queue_redis, CommandStats(queue_redis))
    return Stage(run, redis_port, namespace, settings, workers, api_port)


async def bench(options: argparse.Namespace, group: ProcessGroup) -> str:
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        stage = await set_stage(stack, options, group)
        run, settings, redis_port = stage.run, stage.settings, stage.redis_port
        queue_redis = run.queue_redis
        loopback = LoopbackHttp("127.0.0.1", stage.api_port, CONCURRENCY)
        stack.push_async_callback(loopback.close)
        http = HttpJobs(loopback)
        jobcache = Contender("jobcache HTTP", stage.workers, lambda: as_context(http))
        # Opened for its own phases only: its subscription to the job events would otherwise
        # also receive every event of the others.
        internal = Contender("jobcache internal", stage.workers, lambda: internal_jobs(settings))
        arq_default = await bare_arq(stack, redis_port, stage.namespace, tuned=False)
        arq_tuned = await bare_arq(stack, redis_port, stage.namespace, tuned=True)

        phases = options.phases
        if "latency" in phases:
            for contender in (jobcache, arq_tuned, arq_default):
                await run.latency(contender)
        http.unfinished_reads = 0
        if "throughput" in phases:
            for count in WORKER_COUNTS:
                for contender in (jobcache, arq_tuned, internal, arq_default):
                    await run.throughput(contender, count)
        jobcache.figures.unfinished_reads = http.unfinished_reads
        if "idle" in phases:
            await run.idle_load(jobcache, f"api and {IDLE_WORKERS} workers")
            for contender in (arq_tuned, arq_default):
                await run.idle_load(contender, f"{IDLE_WORKERS} workers")
        sequential = await run.sequential(stage) if "sequential" in phases else None
        server_info = await queue_redis.info("server")
    return render(
        jobcache=jobcache.figures,
        internal=internal.figures,
        arq_default=arq_default.figures,
        arq_tuned=arq_tuned.figures,
        sequential=sequential,
        setup={
            "jobs": options.jobs,
            "latency jobs": options.latency_jobs,
            "concurrency": CONCURRENCY,
            "sequential jobs": f"{options.sequential_jobs} x {options.sequential_rounds}",
            "worker concurrency": settings.worker_concurrency,
            "redis": server_info["redis_version"],
            "cores": os.cpu_count() or 0,
            "run seconds": round(time.monotonic() - started),
        },
        phases=run.phases if options.verbose else None,
    )


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.jobs", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--jobs", type=int, default=3000, help="jobs per throughput run (default 3000)"
    )
    parser.add_argument(
        "--latency-jobs", type=int, default=200, help="sequential jobs for latency (default 200)"
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=5.0, help="idle load window (default 5)"
    )
    parser.add_argument(
        "--sequential-jobs",
        type=int,
        default=1000,
        help="jobs per round of the one-at-a-time HTTP phase (default 1000)",
    )
    parser.add_argument(
        "--sequential-rounds",
        type=int,
        default=3,
        help="rounds of each system in the one-at-a-time HTTP phase (default 3)",
    )
    parser.add_argument(
        "--phases",
        type=phase_list,
        default=PHASES,
        help=f"the phases to run, comma-separated (default all: {','.join(PHASES)})",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also list each phase's Redis commands and each process's CPU",
    )
    options = parser.parse_args(argv)
    if options.jobs < 1 or options.latency_jobs < 2 or options.idle_seconds <= 0:
        parser.error("--jobs must be at least 1, --latency-jobs at least 2, --idle-seconds > 0")
    if options.sequential_jobs < 2 or options.sequential_rounds < 1:
        parser.error("--sequential-jobs must be at least 2, --sequential-rounds at least 1")
    return options


def phase_list(value: str) -> tuple[str, ...]:
    chosen = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown phase(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PHASES)}"
        )
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(bench, parse_arguments(argv))


if __name__ == "__main__":
    sys.exit(main())
