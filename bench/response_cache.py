"""Issue 3's benchmark: what `@cache_response` costs on a hit, and what it saves.

    .venv/bin/python -m bench.response_cache [--seconds 2] [--rounds 7] [--connections 64]

For each backend (memory, and Redis on a redis-server of its own), it starts one uvicorn
process (one worker) serving jobcache's app plus four endpoints, and drives them with `wrk`
(`apt-get install wrk`) over keep-alive connections, the endpoints taking turns each round:

- a constant answer, bare and behind `@cache_response` (every request a hit): the ratio of
  their requests/s is the cost of a hit;
- 20 ms of work, bare and behind `@cache_response`: what caching saves.

It prints the median requests/s over the rounds and the hit/bare ratios (the median of each
round's ratio) against the targets (90% on memory, 80% on Redis). Figures come from one run on
whatever machine this is; only the ratios within a run mean anything.
"""

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from api.main import create_app
from api.response_cache import cache_response
from bench.processes import scratch_environment
from tests.processes import api_command, free_port, redis_server_command, spawn, terminate

WORK_SECONDS = 0.02
TARGETS = {"memory": 0.90, "redis": 0.80}
STARTUP_TIMEOUT = 30.0
ENDPOINTS = ("constant/bare", "constant/cached", "work/bare", "work/cached")


class Payload(BaseModel):
    name: str
    values: list[int]


CONSTANT = Payload(name="constant", values=list(range(10)))


def create_bench_app() -> FastAPI:
    """jobcache's app with the benchmark's endpoints (`uvicorn --factory`)."""
    router = APIRouter(prefix="/bench")

    @router.get("/constant/bare")
    async def constant_bare() -> Payload:
        return CONSTANT

    @router.get("/constant/cached")
    @cache_response(namespace="bench-constant", ttl=3600)
    async def constant_cached() -> Payload:
        return CONSTANT

    @router.get("/work/bare")
    async def work_bare() -> Payload:
        await asyncio.sleep(WORK_SECONDS)
        return CONSTANT

    @router.get("/work/cached")
    @cache_response(namespace="bench-work", ttl=3600)
    async def work_cached() -> Payload:
        await asyncio.sleep(WORK_SECONDS)
        return CONSTANT

    app = create_app()
    app.include_router(router)
    return app


def wait_until(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not check():
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {STARTUP_TIMEOUT:g}s")
        time.sleep(0.05)


@contextmanager
def started(
    command: Sequence[str], log: Path, environment: Mapping[str, str] | None = None, cpu: int = 0
) -> Iterator[subprocess.Popen[bytes]]:
    """A process pinned to one CPU (when the machine has two), stopped by pid on exit. It runs
    in the log's scratch directory, so that no developer's `.env` reaches it."""
    process = spawn(command, environment or os.environ, log, log.parent)
    try:
        if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
            os.sched_setaffinity(process.pid, {sorted(os.sched_getaffinity(0))[cpu]})
        yield process
    finally:
        terminate(process)


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def api_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def api_server(backend: str, directory: Path, stack: ExitStack) -> Iterator[str]:
    """One uvicorn process (one worker) on this backend; its URL."""
    environment = scratch_environment(
        {"LOG_LEVEL": "WARNING", "CPU_WORKERS": "1", "CACHE_NAMESPACE": "bench"}, "RESPONSE_CACHE_"
    )
    if backend == "redis":
        redis_port = free_port()
        redis_command = redis_server_command(redis_port, directory)
        redis = stack.enter_context(started(redis_command, directory / "redis.log", cpu=1))
        wait_until(lambda: redis_answers(redis_port), "redis-server", redis)
        environment.update({"CACHE_BACKEND": "redis", "REDIS_PORT": str(redis_port)})
    else:
        environment["CACHE_BACKEND"] = "local"
    port = free_port()
    command = api_command(
        port,
        "--factory", "--workers", "1", "--no-access-log", "--log-level", "warning",
        app="bench.response_cache:create_bench_app",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with started(command, directory / f"api-{backend}.log", environment, cpu=0) as api:
        wait_until(lambda: api_answers(url), f"api ({backend})", api)
        yield url


def warm(url: str) -> None:
    """Fill the cached endpoints and check that the next request is a hit."""
    for endpoint in ("constant/cached", "work/cached"):
        httpx.get(f"{url}/bench/{endpoint}", timeout=5).raise_for_status()
        if httpx.get(f"{url}/bench/{endpoint}", timeout=5).headers.get("x-cache") != "hit":
            raise RuntimeError(f"{endpoint} is not served from the cache")


def wrk(url: str, seconds: float, connections: int) -> float:
    """Requests/s of one wrk run (one thread); any error or non-2xx answer fails the run."""
    run = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    )  # fmt: skip
    if "Non-2xx" in run.stdout or "Socket errors" in run.stdout:
        raise RuntimeError(f"wrk saw errors on {url}:\n{run.stdout}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{run.stdout}")
    return float(found.group(1))


PAIRS = (("constant/bare", "constant/cached"), ("work/bare", "work/cached"))


@dataclass
class BackendFigures:
    backend: str
    requests_per_second: dict[str, float]
    """The median over the rounds, per endpoint."""
    ratios: dict[str, float]
    """Cached over bare, the median of each round's ratio, per pair (keyed by the cached one)."""


def measure(backend: str, options: argparse.Namespace, directory: Path) -> BackendFigures:
    """Rounds of back-to-back runs of each bare/cached pair, in alternating order, so that a
    machine that slows down or speeds up during the run (other processes) weighs on both
    sides of a ratio alike."""
    runs: dict[str, list[float]] = {endpoint: [] for endpoint in ENDPOINTS}
    ratios: dict[str, list[float]] = {cached: [] for _, cached in PAIRS}
    with ExitStack() as stack:
        url = stack.enter_context(api_server(backend, directory, stack))
        warm(url)
        for endpoint in ENDPOINTS:  # one short run each, so the first round is warm too
            wrk(f"{url}/bench/{endpoint}", 1, options.connections)
        for round_number in range(options.rounds):
            for bare, cached in PAIRS:
                order = (bare, cached) if round_number % 2 == 0 else (cached, bare)
                measured = {
                    endpoint: wrk(f"{url}/bench/{endpoint}", options.seconds, options.connections)
                    for endpoint in order
                }
                for endpoint, value in measured.items():
                    runs[endpoint].append(value)
                ratios[cached].append(measured[cached] / measured[bare])
    return BackendFigures(
        backend,
        {endpoint: statistics.median(values) for endpoint, values in runs.items()},
        {cached: statistics.median(values) for cached, values in ratios.items()},
    )


def report(figures: Sequence[BackendFigures], options: argparse.Namespace) -> str:
    lines = [
        f"cache_response benchmark: uvicorn with 1 worker, wrk -t1 -c{options.connections}, "
        f"median of {options.rounds} rounds of {options.seconds:g}s (ratio: median of the "
        f"rounds' ratios), {os.cpu_count()} CPUs",
        "",
        f"{'backend':<8} {'endpoint':<28} {'requests/s':>11}   {'ratio':>7}   target",
    ]
    for result in figures:
        rps = result.requests_per_second
        hit_ratio = result.ratios["constant/cached"]
        target = TARGETS[result.backend]
        verdict = "met" if hit_ratio >= target else "NOT met"
        work_gain = result.ratios["work/cached"]
        lines += [
            f"{result.backend:<8} {'constant, no cache':<28} {rps['constant/bare']:>11,.0f}",
            f"{'':<8} {'constant, cache hit':<28} {rps['constant/cached']:>11,.0f}   "
            f"{hit_ratio:>6.1%}   >= {target:.0%}: {verdict}",
            f"{'':<8} {'20 ms of work, no cache':<28} {rps['work/bare']:>11,.0f}",
            f"{'':<8} {'20 ms of work, cached':<28} {rps['work/cached']:>11,.0f}   "
            f"{work_gain:>6.1f}x",
        ]
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=7, help="runs per endpoint (median)")
    parser.add_argument("--connections", type=int, default=64, help="wrk's connections")
    parser.add_argument("--backends", default="memory,redis", help="comma-separated: memory, redis")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_arguments(argv)
    if shutil.which("wrk") is None:
        print("the benchmark needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    backends = [name.strip() for name in options.backends.split(",") if name.strip()]
    with tempfile.TemporaryDirectory(prefix="jobcache-bench-") as directory:
        figures = [measure(backend, options, Path(directory)) for backend in backends]
    print(report(figures, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
