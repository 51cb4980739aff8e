"""The real processes a benchmark runs: a private redis-server, the api and arq workers.

Every process is started into one `ProcessGroup`, which stops them all (SIGTERM, then SIGKILL)
whatever way the benchmark ends, so that a failed or interrupted run leaves nothing behind.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx
import redis.asyncio

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HEALTH_CHECK_SUFFIX = ":health-check"
"""arq's worker writes `<queue>:health-check` after its first look at the queue."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Child:
    """A started process whose stdout and stderr go to one log file."""

    def __init__(
        self, name: str, role: str, process: subprocess.Popen[bytes], log_path: Path
    ) -> None:
        self.name = name
        self.role = role
        """What the process is (api, jobcache-worker, ...), shared by processes of one kind."""
        self.process = process
        self.log_path = log_path

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
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} exited with code {code}; its output ended with:\n{self.output_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it still runs after STOP_TIMEOUT seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(STOP_TIMEOUT)


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
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(command),
                cwd=self.directory,
                env=child_environment(settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
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


def child_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any jobcache setting it carries (CACHE_*, REDIS_*),
    plus the benchmark's settings."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("CACHE_", "REDIS_", "BENCH_"))
    }
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")])
    )
    environment.update(settings)
    return environment


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
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed; the benchmark starts its own")
    port = free_port()
    command = [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(group.directory),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
    ]  # fmt: skip
    return group.start("redis-server", command, {}), port


async def wait_for_redis(client: redis.asyncio.Redis, server: Child) -> None:
    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except (redis.ConnectionError, OSError):
            return False

    await wait_until(answers, "redis-server answers PING", [server])


def start_api(group: ProcessGroup, settings: Mapping[str, str]) -> tuple[Child, int]:
    """`uvicorn api.main:app` on a free loopback port, without access logs."""
    port = free_port()
    command = [
        str(BIN / "uvicorn"), "api.main:app",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return group.start("api", command, settings), port


async def wait_for_api(port: int, api: Child) -> None:
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:

        async def healthy() -> bool:
            try:
                return (await client.get("/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(healthy, f"{url}/health answers 200", [api])


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
