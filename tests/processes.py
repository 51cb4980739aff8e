"""Real redis-server, api and worker processes for end-to-end tests, and for the benchmarks.

The end-to-end tests run jobcache exactly as a user does (uvicorn and arq as separate
processes, configured by environment variables), so this module starts them, waits until they
answer (with a deadline, never a bare sleep) and stops them by pid whatever the test did, so
that a failed test leaves no process behind. The benchmarks start the same processes the same
way: `bench/processes.py` builds on the pieces here (the environment, the command lines, the
start and the stop) and adds only what measuring needs.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKER_READY = "worker ready"
"""What the worker logs once arq has started it and it is about to take jobs."""

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
JOBCACHE_PREFIXES = ("CACHE_", "REDIS_")
"""The prefixes of jobcache's settings: a child gets only the ones its starter chose."""
IN_REPOSITORY: Mapping[str, str] = {"PYTHONUNBUFFERED": "1", "JOBCACHE_ENV_FILE": ""}
"""What a child started in the repository needs: its log written as it happens (a test reads
a worker's log while it runs), and no developer's `.env` leaking into it."""

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy and return that, or raise
    TimeoutError after `timeout` seconds. An exception from `condition` ends the wait early."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not true after {timeout:g}s: {what or condition!r}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback TCP port that refuses connections: bound but never listened on, held for the
    block's length, so that no other process can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        port: int = bound.getsockname()[1]
        yield port


def child_environment(
    settings: Mapping[str, str],
    *,
    dropped_prefixes: Sequence[str] = JOBCACHE_PREFIXES,
    base: Mapping[str, str] = IN_REPOSITORY,
) -> dict[str, str]:
    """This process's environment without the variables it may carry that start with one of
    `dropped_prefixes` (by default jobcache's settings, CACHE_* and REDIS_*), then `base`, then
    the settings the caller chose: a child sees only the configuration its test or benchmark
    gave it, never the developer's shell's."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(tuple(dropped_prefixes))
    }
    environment.update(base)
    environment.update(settings)
    return environment


def terminate(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then SIGKILL if it is still running after `timeout` seconds; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout)


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as Linux's /proc shows it: its pid, its start time (which tells it from a later
    process given the same pid) and its command line."""

    pid: int
    started: int
    command: str


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of `pid` from /proc, or None if it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the command name in parentheses, which may hold spaces and parentheses itself.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def descendants(pid: int) -> list[ProcessIdentity]:
    """Every running process below `pid` (its children, theirs, and so on), from /proc."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
            started[int(entry.name)] = stat[2]
    found: list[ProcessIdentity] = []
    below = list(children.get(pid, []))
    while below:
        child = below.pop()
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(ProcessIdentity(child, started[child], command.strip()))
        below.extend(children.get(child, []))
    return found


def still_running(process: ProcessIdentity) -> bool:
    """Whether `process` runs yet: a zombie has ended, and a new process with its pid is another."""
    stat = _stat(process.pid)
    return stat is not None and stat[2] == process.started and stat[0] not in ("Z", "X")


class ChildProcess:
    """A started process whose stdout and stderr go to one log file."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def fail_if_exited(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code} before it was ready")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        return terminate(self.process, timeout)


def spawn(
    command: Sequence[str],
    environment: Mapping[str, str],
    log_path: Path,
    directory: Path = REPO_ROOT,
) -> subprocess.Popen[bytes]:
    """Start `command` in `directory` with exactly `environment`, its stdout and stderr in one
    log file (read while it runs, or shown when it fails), and no stdin to wait on."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(command),
            cwd=directory,
            env=dict(environment),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def start(
    name: str, command: Sequence[str], environment: Mapping[str, str], log_path: Path
) -> ChildProcess:
    """Start `command` from the repository root with exactly `environment`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return ChildProcess(name, spawn(command, environment, log_path), log_path)


NOTABLE = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|Error\b")


def notable_lines(output: str, limit: int = 30) -> str:
    """The lines of a process's output that say something went wrong, at most `limit` of them
    (the first ones: what went wrong first explains the rest)."""
    lines = [line for line in output.splitlines() if NOTABLE.search(line)]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return "\n".join(lines) or "(none)"


@contextmanager
def running(
    name: str, command: Sequence[str], environment: Mapping[str, str], log_path: Path
) -> Iterator[ChildProcess]:
    """A started process, stopped on exit."""
    child = start(name, command, environment, log_path)
    try:
        yield child
    except BaseException as error:
        # A failing test shows what the process said, not only what the test saw: its warnings
        # and errors first (a job's failure may be far from the end), then its last lines.
        output = child.output()
        error.add_note(
            f"--- {name} output ({log_path}), warnings and errors:\n{notable_lines(output)}\n"
            f"--- {name} output, last lines:\n{output[-3000:]}"
        )
        raise
    finally:
        child.stop()


@dataclass(frozen=True)
class Exited:
    """How a process that was expected to stop on its own ended."""

    code: int
    output: str
    seconds: float


def run_until_exit(
    name: str,
    command: Sequence[str],
    environment: Mapping[str, str],
    log_path: Path,
    timeout: float = STARTUP_TIMEOUT,
) -> Exited:
    """Run a process that should exit by itself; kill it and raise if it is still running
    after `timeout` seconds."""
    started = time.monotonic()
    with running(name, command, environment, log_path) as child:
        try:
            code = child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still runs after {timeout:g}s") from None
        seconds = time.monotonic() - started
    return Exited(code, child.output(), seconds)


def api_command(port: int, *options: str, app: str = "api.main:app") -> list[str]:
    """`uvicorn` serving `app` on a loopback `port`, as a user starts the api; `options` are
    more of uvicorn's (the benchmarks turn its access log off)."""
    return [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), *options]


def worker_command() -> list[str]:
    """`python -m worker`, as a user starts a worker, with this virtualenv's Python."""
    return [str(BIN / "python"), "-m", "worker"]


def redis_server_command(port: int, directory: Path | str, appendonly: bool = False) -> list[str]:
    """A redis-server in the foreground on a loopback `port`, keeping its files in `directory`
    and never writing a snapshot (a test or a benchmark must not wait on one)."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError(
            "redis-server is not installed; the process tests and the benchmarks start their own"
        )
    return [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--daemonize", "no",
    ]  # fmt: skip


class Api(ChildProcess):
    """A running api process and the address it serves."""

    def __init__(self, child: ChildProcess, port: int) -> None:
        super().__init__(child.name, child.process, child.log_path)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def answers_health(self) -> bool:
        self.fail_if_exited()
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


@contextmanager
def api(
    environment: Mapping[str, str], log_path: Path, timeout: float = STARTUP_TIMEOUT
) -> Iterator[Api]:
    """`uvicorn api.main:app` on a free port, yielded once GET /health answers 200."""
    port = free_port()
    with running("api", api_command(port), environment, log_path) as child:
        served = Api(child, port)
        wait_for(served.answers_health, timeout, what=f"api answers {served.url}/health")
        yield served


class Worker(ChildProcess):
    """A running `python -m worker` process."""

    def is_ready(self) -> bool:
        self.fail_if_exited()
        return WORKER_READY in self.output()

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        wait_for(self.is_ready, timeout, what=f"{self.name} logs {WORKER_READY!r}")


@contextmanager
def worker(
    environment: Mapping[str, str], log_path: Path, *, name: str = "worker", wait_ready: bool = True
) -> Iterator[Worker]:
    """A worker process; with `wait_ready=False` it is yielded as soon as it is started, so that
    several can start at once (call `wait_ready()` on each)."""
    with running(name, worker_command(), environment, log_path) as child:
        started = Worker(child.name, child.process, child.log_path)
        if wait_ready:
            started.wait_ready()
        yield started


class RedisServer:
    """A private redis-server on a port and in a directory of its own; `settings` are the
    jobcache variables that reach it. It can be stopped and started again (same port, same
    directory, so an append-only file brings its data back)."""

    def __init__(
        self,
        directory: str,
        password: str | None,
        appendonly: bool,
        extra_arguments: Sequence[str] = (),
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.password = password
        self.directory = Path(directory)
        self.command = redis_server_command(self.port, directory, appendonly)
        if password is not None:
            self.command += ["--requirepass", password]
        self.command += list(extra_arguments)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> dict[str, str]:
        settings = {"REDIS_HOST": self.host, "REDIS_PORT": str(self.port)}
        if self.password is not None:
            settings["REDIS_PASSWORD"] = self.password
        return settings

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host=self.host, port=self.port, db=db, password=self.password, decode_responses=True
        )

    def start(self) -> None:
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        wait_for(self._answers_ping, STARTUP_TIMEOUT, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        """SIGTERM, as an operator's restart does: Redis writes its append-only file first."""
        if self.process is not None:
            terminate(self.process)

    def _answers_ping(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"redis-server exited at start:\n{log}")
        client = self.client()
        try:
            return bool(client.ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # it answers, if only to refuse a client without the right user
        except redis.ConnectionError:
            return False
        finally:
            client.close()


@contextmanager
def redis_server(
    password: str | None = None, appendonly: bool = False, extra_arguments: Sequence[str] = ()
) -> Iterator[RedisServer]:
    """A redis-server of its own on a free port and in its own temporary directory, without
    snapshots; stopped by pid on exit."""
    with tempfile.TemporaryDirectory(prefix="jobcache-redis-") as directory:
        server = RedisServer(directory, password, appendonly, extra_arguments)
        try:
            server.start()
            yield server
        finally:
            server.stop()
