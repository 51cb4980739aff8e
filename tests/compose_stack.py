"""docker-compose.yml run for real, with podman and podman-compose, for the compose tests.

A stack runs the operator's files from a copy in a temporary folder, beside a `.env` made from
.env.example as the compose file's header says (never a developer's own `.env`), under a
compose project name of its own and with the api published on a free port of the host. Its
`remove()` takes away every container, volume, network and image tag the project made,
whatever the test did; the images it builds on stay cached. Those come from
tests/compose/images.sh: stand-ins for the two upstream images (no registry is reachable
here), and the project's image, whose layers the project's own builds reuse.

Before each `up`, the project's network and its bridge are made with a MAC address of the
bridge's own (`prepare_network`), as Docker and netavark 1.9 or later make their bridges; the
netavark of Debian 12's podman (1.4) does not, which lost one failover in three.
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import BIN, JOBCACHE_PREFIXES, REPO_ROOT, child_environment, free_port

IMAGES_SCRIPT = REPO_ROOT / "tests" / "compose" / "images.sh"
CONTAINERS_CONF = REPO_ROOT / "tests" / "compose" / "containers.conf"
IMAGES_TIMEOUT = 900.0
"""A new machine's first run debootstraps Debian and builds three images (about 75 s here)."""
COMPOSE_TIMEOUT = 180.0
"""The longest one podman-compose command may take: an `up` that builds, a `down` that waits
out a worker's stop grace."""
NOT_COPIED = (
    ".git",
    ".venv",
    ".env",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "test-artifacts",
    "node_modules",
)
"""Left out of the stack's copy of the repository: what an operator's checkout does not have,
and the developer's own `.env`."""
STACK_SERVICES = ("api", "worker", "worker-cpu")
"""The services the tests start (and those they depend on, both Redis): RedisInsight's image
cannot be had here."""
SENTINEL_SERVICES = ("redis-replica", "sentinel-1", "sentinel-2", "sentinel-3")


def podman_compose() -> str:
    """podman-compose from the test's environment (requirements-dev.txt pins it)."""
    path = BIN / "podman-compose"
    found = str(path) if path.exists() else shutil.which("podman-compose")
    if found is None or shutil.which("podman") is None:
        message = "the compose tests need podman (Debian's) and podman-compose (pip)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def engine_environment() -> dict[str, str]:
    """What podman and podman-compose run with: this machine's podman settings, and none of
    jobcache's own variables, which would win over the stack's `.env` (compose reads the
    environment first)."""
    environment = child_environment({}, dropped_prefixes=(*JOBCACHE_PREFIXES, "API_"), base={})
    environment.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return environment


def prepare_images() -> None:
    """Build what is missing of the stand-in images, and the project's image (from its layer
    cache, in seconds, when .ci/run has built it already)."""
    subprocess.run(
        ["bash", str(IMAGES_SCRIPT)],
        env=engine_environment(),
        check=True,
        timeout=IMAGES_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def podman(
    *arguments: str, timeout: float = 60.0, check: bool = True, with_stderr: bool = False
) -> str:
    """Run podman; its standard output (and error, `with_stderr`: `podman logs` passes a
    container's standard error on as its own), stripped."""
    done = subprocess.run(
        ["podman", *arguments],
        env=engine_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if with_stderr else subprocess.PIPE,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(arguments)}: {(done.stderr or '')[-2000:]}")
    return done.stdout.strip()


class ComposeStack:
    """One compose project, its folder, its `.env` and its api's address."""

    def __init__(self, folder: Path, settings: dict[str, str], profiles: Sequence[str]) -> None:
        self.folder = folder
        self.project = f"jobcache-test-{uuid.uuid4().hex[:8]}"
        self.api_key = settings["API_KEYS"]
        self.redis_password = settings["REDIS_PASSWORD"]
        self.api_port = free_port()
        self.profiles = list(profiles)
        self.log = folder / "podman-compose.log"
        self._anonymous_volumes: set[str] = set()
        self._bridges: dict[str, str] = {}
        """The bridges prepare_network() made, by name, and the address it gave each."""
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10.0,
        )

    def compose(self, *arguments: str, timeout: float = COMPOSE_TIMEOUT) -> None:
        """`podman-compose -p <project> [--profile ...] <arguments>` in the stack's folder, as an
        operator runs it; its output goes to the stack's log, whose end a failure shows."""
        if arguments[0] in ("up", "down"):
            # Either may remove containers, whose unnamed volumes it leaves behind.
            self.remember_anonymous_volumes()
        if arguments[0] == "up":
            self.prepare_network()
        profiles = [option for name in self.profiles for option in ("--profile", name)]
        command = [podman_compose(), "-p", self.project, *profiles, *arguments]
        environment = engine_environment() | {"API_PORT": str(self.api_port)}
        with self.log.open("a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            done = subprocess.run(
                command,
                cwd=self.folder,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        if done.returncode != 0:
            tail = self.log.read_text()[-3000:]
            raise RuntimeError(f"podman-compose {' '.join(arguments)} failed:\n{tail}")

    def prepare_network(self) -> None:
        """Create the project's network, as podman-compose would, and its bridge with a MAC
        address of its own, before the first container joins it.

        A Linux bridge without an address set takes the lowest of its ports' (the containers'
        host-side veths, random) and takes another whenever a container with a lower one
        starts or the one it has stops, with no announcement. The host then drops what the
        other containers send to the gateway's old address, until their ARP entry is
        refreshed, up to a minute later; the gateway is where aardvark-dns answers, so each
        name they resolve meanwhile takes 10 to 40 s. Redis and Sentinel resolve in their
        event loop: a replica reconnecting to the killed master's name stopped answering the
        Sentinels, which found no replica to promote and tried again two failover-timeouts
        later (4 runs in 8), and Sentinels starting beside the others spent 30 s in TILT mode
        (about one run in two). netavark 1.9 gives the bridges it creates an address; 1.4, in
        Debian 12, does not, and takes a bridge that exists as it finds it: with its gateway
        address and up, as netavark would have made it.
        """
        label = f"io.podman.compose.project={self.project}"
        network = f"{self.project}_default"
        listed = podman("network", "ls", "--filter", f"label={label}", "--format", "{{.Name}}")
        if network not in listed.split():
            # podman-compose's own arguments for a project's default network.
            labels = ["--label", label, "--label", f"com.docker.compose.project={self.project}"]
            podman("network", "create", *labels, network)
        bridge, subnet, gateway = podman(
            "network",
            "inspect",
            "--format",
            "{{.NetworkInterface}}{{range .Subnets}} {{.Subnet}} {{.Gateway}}{{end}}",
            network,
        ).split()[:3]
        if (Path("/sys/class/net") / bridge).exists():
            return
        prefix = subnet.split("/")[1]
        address = unicast_address()
        ip("link", "add", "name", bridge, "address", address, "type", "bridge")
        self._bridges[bridge] = address
        ip("address", "add", f"{gateway}/{prefix}", "dev", bridge)
        ip("link", "set", "dev", bridge, "up")

    def containers(self, service: str | None = None, *, running: bool = False) -> list[str]:
        """The names of the project's containers (of one service), in order."""
        filters = ["--filter", f"label=io.podman.compose.project={self.project}"]
        if service is not None:
            filters += ["--filter", f"label=io.podman.compose.service={service}"]
        listed = podman("ps", *([] if running else ["--all"]), *filters, "--format", "{{.Names}}")
        return sorted(listed.split())

    def container(self, service: str) -> str:
        [name] = self.containers(service)
        return name

    def remember_anonymous_volumes(self) -> None:
        """Note the unnamed volumes of the project's containers (a Redis image's /data): a
        recreated or removed container leaves its own behind, unlabelled."""
        for name in self.containers():
            mounts = json.loads(podman("inspect", "--format", "{{json .Mounts}}", name))
            for mount in mounts or []:
                if mount.get("Type") == "volume" and re.fullmatch(r"[0-9a-f]{64}", mount["Name"]):
                    self._anonymous_volumes.add(mount["Name"])

    def healthy(self, service: str) -> bool:
        """Whether each container of `service` passes its compose healthcheck now. Podman runs
        healthchecks on a timer only under systemd, so this runs them as an operator would."""
        names = self.containers(service, running=True)
        return bool(names) and all(self._passes_healthcheck(name) for name in names)

    @staticmethod
    def _passes_healthcheck(name: str) -> bool:
        done = subprocess.run(
            ["podman", "healthcheck", "run", name],
            env=engine_environment(),
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        return done.returncode == 0

    def exec(self, service: str, *command: str) -> str:
        return podman("exec", self.container(service), *command)

    def logs(self, service: str) -> str:
        """What the containers of `service` have logged, together."""
        return "\n".join(
            podman("logs", name, with_stderr=True) for name in self.containers(service)
        )

    @staticmethod
    def hostname(container: str) -> str:
        return podman("inspect", "--format", "{{.Config.Hostname}}", container)

    def kill(self, service: str) -> None:
        podman("kill", self.container(service))

    def start_again(self, service: str) -> None:
        podman("start", self.container(service))

    def diagnosis(self) -> str:
        """What a failed test shows: the end of podman-compose's output, each container's
        state and the end of its log."""
        parts = [f"podman-compose's output ends:\n{self.log.read_text()[-2000:]}"]
        for name in self.containers():
            state = podman(
                "inspect",
                "--format",
                "{{.State.Status}} since {{.State.StartedAt}}",
                name,
                check=False,
            )
            logs = "\n".join(last_distinct(podman("logs", name, check=False, with_stderr=True)))
            parts.append(f"--- {name} ({state}):\n{logs}")
        return "\n".join(parts)

    def remove(self) -> None:
        """`down` with the volumes, then whatever is left of the project: containers (with
        their unnamed volumes), named volumes, networks, the image tags it built and its
        pod."""
        self.api.close()
        label = f"label=io.podman.compose.project={self.project}"
        # What `down` leaves behind, if it fails, is removed below.
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")
        for name in self.containers():
            podman("rm", "--force", "--volumes", name, check=False)
        volumes = podman("volume", "ls", "--filter", label, "--format", "{{.Name}}", check=False)
        for volume in [*volumes.split(), *self._anonymous_volumes]:
            podman("volume", "rm", "--force", volume, check=False)
        networks = podman("network", "ls", "--filter", label, "--format", "{{.Name}}", check=False)
        for network in networks.split():
            podman("network", "rm", "--force", network, check=False)
        # netavark deletes a bridge once its last container is gone, not one no container
        # joined; a bridge of that name with ports or another address is another's now.
        for bridge, address in self._bridges.items():
            interface = Path("/sys/class/net") / bridge
            with contextlib.suppress(OSError):
                if (interface / "address").read_text().strip() == address and not any(
                    (interface / "brif").iterdir()
                ):
                    subprocess.run(["ip", "link", "delete", bridge], check=False, timeout=30)
        for service in STACK_SERVICES:
            podman("rmi", f"{self.project}_{service}", check=False)
        # podman-compose puts the project's containers in a pod, which `down` leaves.
        podman("pod", "rm", "--force", f"pod_{self.project}", check=False)


def ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, timeout=30, stdin=subprocess.DEVNULL)


def unicast_address() -> str:
    """A random MAC address, locally administered and unicast."""
    return ":".join(f"{byte:02x}" for byte in (0x02, *secrets.token_bytes(5)))


def last_distinct(log: str, count: int = 20) -> list[str]:
    """The last `count` lines of a log that differ in more than their numbers: a Redis
    retrying every second would otherwise fill a failure's report with one line."""
    kept: list[str] = []
    seen: set[str] = set()
    for line in reversed(log.splitlines()):
        shape = re.sub(r"\d+", "", line)
        if shape not in seen:
            seen.add(shape)
            kept.append(line)
        if len(kept) == count:
            break
    return kept[::-1]


def stack_settings(**overrides: str) -> dict[str, str]:
    """The `.env` an operator makes from .env.example: a password and a key of their own."""
    return {
        "REDIS_PASSWORD": secrets.token_urlsafe(18),
        "API_KEYS": secrets.token_urlsafe(24),
        **overrides,
    }


def env_file_from_example(settings: dict[str, str]) -> str:
    """.env.example with these settings' lines replaced, or added at its end."""
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    remaining = dict(settings)
    for index, line in enumerate(lines):
        name = line.split("=", 1)[0].lstrip("# ").strip()
        if "=" in line and name in remaining:
            lines[index] = f"{name}={remaining.pop(name)}"
    lines += [f"{name}={value}" for name, value in remaining.items()]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def compose_stack(settings: dict[str, str], profiles: Sequence[str] = ()) -> Iterator[ComposeStack]:
    """A stack in a copy of the repository; removed on the way out, whatever happened."""
    with tempfile.TemporaryDirectory(prefix="jobcache-compose-") as temporary:
        folder = Path(temporary) / "jobcache"
        shutil.copytree(REPO_ROOT, folder, ignore=shutil.ignore_patterns(*NOT_COPIED))
        (folder / ".env").write_text(env_file_from_example(settings))
        stack = ComposeStack(folder, settings, profiles)
        try:
            yield stack
        except BaseException as error:
            error.add_note(stack.diagnosis())
            raise
        finally:
            stack.remove()


def wait_until(condition: Any, within: float, what: str, interval: float = 0.5) -> Any:
    """Poll `condition` until it returns something truthy; errors while polling count as not
    yet (a container starting, a Redis failing over). Raises naming `what` after `within` s."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            value = condition()
        except (httpx.HTTPError, RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
            value, last = None, error
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true after {within:g}s: {what} (last: {last!r})")
        time.sleep(interval)
