"""The client as its own distribution (client/pyproject.toml): built as a wheel and installed into
a fresh virtual environment beside nothing but its declared dependencies, it imports and its
`jobcache` command runs, with none of the server's packages there; and its version is the
api's, which is what CI checks it against.

The wheel is built as `pip install ./client` builds it, in pip's isolated build environment
(setuptools from the package index, usually out of pip's cache: the environment's own
setuptools cannot build a wheel everywhere). Its dependencies are not downloaded: the installed
distributions that its `Requires-Dist` needs, theirs, and so on, are copied from this
environment (the pinned versions), so the fresh environment holds exactly what the wheel
declares and an import of anything undeclared fails."""

import email
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import jobcache_client
from shared.settings import Settings
from tests.conftest import client_for
from tests.processes import REPO_ROOT, refusing_port

CLIENT_ROOT = REPO_ROOT / "client"
SERVER_PACKAGES = ("api", "shared", "worker", "client", "fastapi", "redis", "arq", "pydantic")
"""Top-level names that must not be importable beside the client: the server's own packages,
the old name of the client's, and a few of the server's dependencies."""
PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"
INSPECT_ENVIRONMENT = """
import importlib.metadata, importlib.util, json, sys
import jobcache_client, jobcache_client.cli
print(json.dumps({
    "file": jobcache_client.__file__,
    "version": importlib.metadata.version("jobcache-client"),
    "present": [name for name in sys.argv[1:] if importlib.util.find_spec(name) is not None],
}))
"""


def root_version() -> str:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    version: str = project["version"]
    return version


async def test_the_client_has_the_version_of_the_api_it_speaks_to(
    local_settings: Settings,
) -> None:
    async with client_for(local_settings) as http:
        api_version = (await http.get("/openapi.json")).json()["info"]["version"]
    assert jobcache_client.__version__ == api_version == root_version()
    assert importlib.metadata.version("jobcache-client") == api_version, (
        "the installed client is not this checkout's version: `make test` installs it again"
    )


def test_the_servers_distribution_does_not_ship_the_client() -> None:
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    included = setuptools["packages"]["find"]["include"]
    for package in ("client", "client.jobcache_client", "jobcache_client"):
        assert not any(fnmatch(package, pattern) for pattern in included), package


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result.stdout


def build_wheel(source: Path, wheels: Path) -> Path:
    """The client's wheel, built from a copy of client/ (a build writes into its source)."""
    shutil.copytree(
        CLIENT_ROOT, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    pip_wheel = (sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps")
    succeeded(run(*pip_wheel, "--wheel-dir", wheels, source, cwd=source))
    [wheel] = wheels.glob("*.whl")
    return wheel


def requirement_closure(requirements: list[str]) -> list[importlib.metadata.Distribution]:
    """The distributions installed here that `requirements` need, theirs, and so on: markers
    evaluated for this interpreter, no extras; each installed version must satisfy them."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        distribution = importlib.metadata.distribution(requirement.name)
        assert requirement.specifier.contains(distribution.version, prereleases=True), (
            f"{requirement} is not met by the installed {distribution.version}"
        )
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = distribution
            pending.extend(Requirement(text) for text in distribution.requires or [])
    return list(found.values())


def copy_installed(distribution: importlib.metadata.Distribution, site_packages: Path) -> None:
    """The distribution's files in site-packages (its modules and metadata; not its scripts)."""
    for file in distribution.files or []:
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue
        target = site_packages / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(str(distribution.locate_file(file))), target)


def fresh_environment(venv: Path, wheel: Path, requirements: list[str]) -> Path:
    """A virtual environment at `venv` with the wheel installed, and what it requires copied
    from this one; its site-packages."""
    succeeded(run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent))
    python = venv / "bin" / "python"
    pip_install = (sys.executable, "-m", "pip", "--python", python, "install", "--quiet")
    succeeded(run(*pip_install, "--no-deps", "--no-index", wheel, cwd=venv.parent))
    site_packages = Path(succeeded(run(python, "-c", PURELIB, cwd=venv.parent)).strip())
    for distribution in requirement_closure(requirements):
        copy_installed(distribution, site_packages)
    return site_packages


def test_the_client_installs_alone_and_its_command_runs(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "source", tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(
            archive.read(next(name for name in names if name.endswith(".dist-info/METADATA")))
        )
    assert {name.split("/")[0] for name in names} == {
        "jobcache_client",
        f"jobcache_client-{jobcache_client.__version__}.dist-info",
    }
    assert "jobcache_client/py.typed" in names
    assert (metadata["Name"], metadata["Version"]) == ("jobcache-client", root_version())
    requirements = metadata.get_all("Requires-Dist") or []
    assert {canonicalize_name(Requirement(text).name) for text in requirements} == {
        "httpx",
        "httpx-sse",
    }

    venv = tmp_path / "venv"
    site_packages = fresh_environment(venv, wheel, requirements)
    python = venv / "bin" / "python"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    seen = json.loads(
        succeeded(run(python, "-c", INSPECT_ENVIRONMENT, *SERVER_PACKAGES, cwd=elsewhere))
    )
    assert Path(seen["file"]).is_relative_to(site_packages)
    assert seen["version"] == jobcache_client.__version__
    assert seen["present"] == [], "only the client and what it declares are installed"

    command = venv / "bin" / "jobcache"
    assert succeeded(run(command, "--help", cwd=elsewhere)).startswith("usage: jobcache ")
    assert succeeded(run(python, "-m", "jobcache_client", "--version", cwd=elsewhere)) == (
        f"jobcache-client {jobcache_client.__version__}\n"
    )
    with refusing_port() as port:
        refused = run(command, "--url", f"http://127.0.0.1:{port}", "get", "A" * 22, cwd=elsewhere)
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.endswith(": connection refused\n"), "its HTTP stack came along"
