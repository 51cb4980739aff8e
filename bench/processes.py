"""The real processes a benchmark runs: a private redis-server, the api and arq workers.

Every process is started into one `ProcessGroup`, which stops them all (SIGTERM, then SIGKILL)
whatever way the benchmark ends, so that a failed or interrupted run leaves nothing behind. The
environment, the command lines, the start and the stop are the end-to-end tests' own
(`tests/processes.py`): a benchmark measures the processes the tests check.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx
import redis.asyncio

from tests.processes import (
    JOBCACHE_PREFIXES,
    REPO_ROOT,
    ChildProcess,
    api_command,
    child_environment,
    free_port,
    redis_server_command,
    spawn,
)

STARTUP_TIMEOUT = 30.0
HEALTH_CHECK_SUFFIX = ":health-check"
"""arq's worker writes `<queue>:health-check` after its first look at the queue."""


def scratch_environment(settings: Mapping[str, str], *dropped_prefixes: str) -> dict[str, str]:
    """The environment of a child that runs in a benchmark's scratch directory: this process's
    without jobcache's settings and those starting with `dropped_prefixes`, with PYTHONPATH
    finding the code (not the working directory), plus the benchmark's `settings`. No
    developer's `.env` is in the scratch directory to be read."""
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH")]
    return child_environment(
        settings,
        dropped_prefixes=(*JOBCACHE_PREFIXES, *dropped_prefixes),
        base={"PYTHONPATH": os.pathsep.join(filter(None, paths))},
    )


class Child(ChildProcess):
    """A started process of a role, whose CPU time the benchmark counts."""

    def __init__(
        self, name: str, role: str, process: subprocess.Popen[bytes], log_path: Path
    ) -> None:
        super().__init__(name, process, log_path)
        self.role = role
        """What the process is (api, jobcache-worker, ...), shared by processes of one kind."""

    def cpu_seconds(self) -> float | None:
        """User and system CPU time so far, from Linux's /proc; None where that is missing."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def output_tail(self, characters: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def fail_if_exited(self) -> None:
        """Fail with the end of the process's output: its log goes with the scratch directory."""
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} exited with code {code}; its output ended with:\n{self.output_tail()}"
            )


class ProcessGroup:
    """Starts processes from one working directory and stops all of them on exit.

    The working directory is a scratch directory (not the repository), so a developer's `.env`
    cannot point the benchmark's processes at another Redis; PYTHONPATH finds the code.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._children: list[Child] = []
        self._started: Counter[str] = Counter()

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(error, Exception):
            # The processes' logs go with the scratch directory: show them while they exist.
            for child in self._children:
                print(
                    f"--- {child.name} output, last lines:\n{child.output_tail()}", file=sys.stderr
                )
        self.stop_all()

    def start(self, name: str, command: Sequence[str], settings: Mapping[str, str]) -> Child:
        """Start `command`; `name` gets a number when it was used before (worker-2, ...)."""
        role = name
        self._started[role] += 1
        if self._started[role] > 1:
            name = f"{role}-{self._started[role]}"
        log_path = self.directory / f"{name}.log"
        # The bare arq worker reads BENCH_* only as the benchmark sets them for it.
        environment = scratch_environment(settings, "BENCH_")
        process = spawn(command, environment, log_path, self.directory)
        child = Child(name, role, process, log_path)
        self._children.append(child)
        return child

    def stop(self, children: Sequence[Child]) -> None:
        for child in reversed(children):
            child.stop()
            self._children.remove(child)

    def stop_all(self) -> None:
        self.stop(list(self._children))

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of the running processes, summed by role."""
        seconds: dict[str, float] = {}
        for child in self._children:
            used = child.cpu_seconds()
            if used is not None:
                seconds[child.role] = seconds.get(child.role, 0.0) + used
        return seconds


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    what: str,
    watched: Sequence[Child] = (),
    within: float = STARTUP_TIMEOUT,
) -> None:
    """Poll `condition` until it is true; fail early if a watched process exits."""
    deadline = time.monotonic() + within
    while not await condition():
        for child in watched:
            child.fail_if_exited()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not true after {within:g}s: {what}")
        await asyncio.sleep(0.02)


def start_redis(group: ProcessGroup) -> tuple[Child, int]:
    """A redis-server of the benchmark's own, on a free loopback port, without persistence."""
    port = free_port()
    command = redis_server_command(port, group.directory)
    return group.start("redis-server", command, {}), port


async def wait_for_redis(client: redis.asyncio.Redis, server: Child) -> None:
    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except (redis.ConnectionError, OSError):
            return False

    await wait_until(answers, "redis-server answers PING", [server])


def start_api(
    group: ProcessGroup,
    settings: Mapping[str, str],
    *,
    name: str = "api",
    app: str = "api.main:app",
) -> tuple[Child, int]:
    """`uvicorn api.main:app` (or another `app`) on a free loopback port, without access logs."""
    port = free_port()
    command = api_command(port, "--log-level", "warning", "--no-access-log", app=app)
    return group.start(name, command, settings), port


async def wait_for_api(port: int, api: Child, health: str = "/health") -> None:
    """Until the api answers 200 at `health` (any FastAPI app answers at /docs)."""
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:

        async def healthy() -> bool:
            try:
                return (await client.get(health)).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(healthy, f"{url}{health} answers 200", [api])


async def start_workers(
    group: ProcessGroup,
    count: int,
    *,
    name: str,
    command: Sequence[str],
    settings: Mapping[str, str],
    queue_name: str,
    queue_redis: redis.asyncio.Redis,
) -> list[Child]:
    """Start `count` arq workers one after the other, each waited on until it has looked at
    its queue: its health-check key, deleted before it starts, exists again (a running worker
    rewrites that key only hourly, so the key that appears is the new worker's)."""
    health_key = queue_name + HEALTH_CHECK_SUFFIX
    workers: list[Child] = []
    for _ in range(count):
        await queue_redis.delete(health_key)
        worker = group.start(name, command, settings)
        workers.append(worker)

        async def has_polled() -> bool:
            return bool(await queue_redis.exists(health_key))

        await wait_until(has_polled, f"{worker.name} writes {health_key}", [worker])
    return workers


Measure = Callable[[argparse.Namespace, ProcessGroup], Coroutine[Any, Any, str]]
"""A benchmark: its measurements with these options, in this group's processes, as a table."""


def run_benchmark(measure: Measure, options: argparse.Namespace) -> int:
    """Run `measure` with a process group in a scratch directory that it leaves behind
    stopped however the run ends (an error, Ctrl-C, SIGTERM), then print its table."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with (
        tempfile.TemporaryDirectory(prefix="jobcache-bench-") as directory,
        ProcessGroup(Path(directory)) as group,
    ):
        print(f"benchmarking; process logs in {directory} until the run ends", file=sys.stderr)
        table = asyncio.run(measure(options, group))
    print(table)
    return 0


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the ProcessGroup, which stops every child.
    raise SystemExit(128 + signum)
