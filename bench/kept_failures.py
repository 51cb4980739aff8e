"""Issue 22's memory measure of the kept failures: bytes of Redis memory per job that ended
failed and is kept FAILED_JOB_TTL, for a job with small parameters and one with 1 KiB of them,
on a private redis-server.

    .venv/bin/python -m bench.kept_failures [--jobs 1000]

Each kept failure holds, on the queue's Redis, its QueuedJob (parameters, owner, callback) and
an entry in its queue's and its job type's indexes (shared/failures/redis.py), and on the
cache's its record, kept as long. The figures are Redis's own MEMORY USAGE of those keys (the
indexes' divided among their jobs), written as the runner writes them.
"""

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio

from bench.processes import ProcessGroup, run_benchmark, start_redis, wait_for_redis
from shared.failures.redis import RedisKeptFailures
from shared.keys import Keys, new_job_id
from shared.queue import QueuedJob
from shared.records import JobRecord, JobStatus

NAMESPACE = "bench"
QUEUE = "default"
TTL = 7 * 24 * 60 * 60
WORKLOADS = {
    "small parameters (40 B)": {"message": "x" * 26},
    "1 KiB of parameters": {"message": "x" * 1010},
}
OWNER = "5e" * 32
"""An API key's digest, as a keyed job's owner is."""


async def memory_of(client: redis.asyncio.Redis, keys: Sequence[str]) -> int:
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        return sum(int(used or 0) for used in await pipe.execute())


async def measure(client: redis.asyncio.Redis, jobs: int, parameters: dict[str, str]) -> list[int]:
    """Bytes per kept failure: its QueuedJob, its share of the two indexes, its record."""
    await client.flushdb()
    keys = Keys(NAMESPACE)
    failures = RedisKeptFailures(client, keys, TTL)
    ids = [new_job_id() for _ in range(jobs)]
    now = datetime.now(UTC)
    for job_id in ids:
        job = QueuedJob(
            id=job_id, name="echo", parameters=parameters, created_at=now, owner=OWNER, queue=QUEUE
        )
        await failures.keep(job, now)
        record = JobRecord(
            id=job_id,
            name="echo",
            status=JobStatus.FAILED,
            error="ConnectionError: the partner's API did not answer",
            attempts=1,
            created_at=now,
            started_at=now,
            finished_at=now,
            owner=OWNER,
        )
        await client.set(keys.job_record(job_id), record.model_dump_json(), ex=TTL)
    kept = await memory_of(client, [keys.failed_job(QUEUE, job_id) for job_id in ids])
    indexes = await memory_of(
        client, [keys.failed_jobs(QUEUE), keys.failed_jobs_of_type(QUEUE, "echo")]
    )
    records = await memory_of(client, [keys.job_record(job_id) for job_id in ids])
    return [round(kept / jobs), round(indexes / jobs), round(records / jobs)]


async def bench(options: argparse.Namespace, group: ProcessGroup) -> str:
    server, port = start_redis(group)
    client = redis.asyncio.Redis(host="127.0.0.1", port=port)
    try:
        await wait_for_redis(client, server)
        lines = [
            f"Redis memory per kept failed job, {options.jobs} kept (MEMORY USAGE, bytes)",
            f"{'workload':<26} {'job kept':>9} {'indexes':>8} {'record':>7} {'total':>6}",
        ]
        for label, parameters in WORKLOADS.items():
            kept, indexes, record = await measure(client, options.jobs, parameters)
            total = kept + indexes + record
            lines.append(f"{label:<26} {kept:>9} {indexes:>8} {record:>7} {total:>6}")
        return "\n".join(lines)
    finally:
        await client.aclose()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kept_failures",
        description="Redis memory per kept failed job (FAILED_JOB_TTL).",
    )
    parser.add_argument("--jobs", type=int, default=1000, help="kept failures written")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(bench, parse_arguments(argv))


if __name__ == "__main__":
    sys.exit(main())
