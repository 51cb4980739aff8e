"""The address a worker announces for its endpoint is one Prometheus accepts and reaches: an IPv6
host in brackets, the host's own address (not loopback) when it listens everywhere with
Sentinel, or what WORKER_METRICS_ADVERTISE says."""

import shutil
import socket
import subprocess
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from shared.errors import ConfigurationError
from shared.host_port import join_host_port, split_host_port
from shared.settings import load_settings
from tests.conftest import settings_for_test
from tests.deployments import Deployment
from tests.processes import api, free_port, wait_for, worker
from worker.endpoint_address import advertised_address, advertised_host

DOCUMENTATION_IPV4 = "203.0.113.7"
DOCUMENTATION_IPV6 = "2001:db8::7"
"""Addresses of no one (RFC 5737, RFC 3849): a route to them is the route a remote Sentinel
or Redis would be reached by. Finding the worker's address sends them nothing."""


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def source_by_kernel_route(target: str) -> str:
    """The source address Linux's routing table gives for `target` (`ip route get`), found
    without the code under test; the test is skipped when there is no route to it."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` to read the routing table")
    family = "-6" if ":" in target else "-4"
    answer = subprocess.run(
        ["ip", family, "route", "get", target], capture_output=True, text=True, timeout=5
    )
    words = answer.stdout.split()
    if answer.returncode != 0 or "src" not in words:
        pytest.skip(f"this machine has no route to {target}: {answer.stderr.strip()}")
    return words[words.index("src") + 1]


def test_an_ipv6_host_is_announced_in_brackets_as_prometheus_takes_it() -> None:
    assert join_host_port("::1", 37869) == "[::1]:37869"
    assert join_host_port("10.0.0.7", 9100) == "10.0.0.7:9100"
    announced = advertised_address(settings_for_test(worker_metrics_host="::1"), 37869)
    assert announced == "[::1]:37869"
    url = httpx.URL(f"http://{announced}/metrics")
    assert (url.host, url.port) == ("::1", 37869)


def test_a_worker_listening_on_one_address_announces_that_address() -> None:
    assert advertised_host(settings_for_test(worker_metrics_host="10.0.0.7")) == "10.0.0.7"
    loopback = settings_for_test(worker_metrics_host="0.0.0.0", redis_host="127.0.0.1")
    assert advertised_host(loopback) == "127.0.0.1"


def test_listening_everywhere_with_sentinel_announces_the_address_towards_the_sentinels() -> None:
    expected = source_by_kernel_route(DOCUMENTATION_IPV4)
    # REDIS_HOST keeps its loopback default, as it does in a Sentinel deployment's settings.
    settings = settings_for_test(
        worker_metrics_host="0.0.0.0",
        redis_sentinels=f"{DOCUMENTATION_IPV4}:26379",
        redis_sentinel_master="jobcache",
    )
    assert settings.redis_host == "127.0.0.1"
    assert advertised_host(settings) == expected
    assert expected != "127.0.0.1"


def test_listening_on_every_ipv6_interface_announces_the_ipv6_address_towards_redis() -> None:
    expected = source_by_kernel_route(DOCUMENTATION_IPV6)
    settings = settings_for_test(worker_metrics_host="::", redis_host=DOCUMENTATION_IPV6)
    assert advertised_host(settings) == expected
    assert advertised_address(settings, 9100) == f"[{expected}]:9100"


@pytest.mark.parametrize(
    ("advertise", "announced"),
    [
        ("metrics.example.com:9200", "metrics.example.com:9200"),
        ("jobcache-worker-7", "jobcache-worker-7:9100"),
        ("[2001:db8::7]:9200", "[2001:db8::7]:9200"),
        ("[2001:db8::7]", "[2001:db8::7]:9100"),
        ("2001:db8::7", "[2001:db8::7]:9100"),
    ],
)
def test_worker_metrics_advertise_is_announced_instead_of_what_the_worker_finds(
    advertise: str, announced: str
) -> None:
    settings = settings_for_test(worker_metrics_host="0.0.0.0", worker_metrics_advertise=advertise)
    assert advertised_address(settings, 9100) == announced


@pytest.mark.parametrize(
    ("advertise", "problem"),
    [
        ("host:99999", "port '99999'"),
        ("host:", "port after ':' is missing"),
        ("two words", "not a host name"),
        ("[not-v6]:9100", "not an IPv6 address"),
        ("::1::9100", "not an IPv6 address"),
    ],
)
def test_a_bad_worker_metrics_advertise_stops_startup_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, advertise: str, problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKER_METRICS_ADVERTISE", advertise)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    message = str(raised.value)
    assert "WORKER_METRICS_ADVERTISE" in message and problem in message, message


def test_an_empty_worker_metrics_advertise_is_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKER_METRICS_ADVERTISE", "")
    assert load_settings().worker_metrics_advertise is None
    assert split_host_port(" worker:9100 ") == ("worker", 9100)


@pytest.mark.processes
def test_workers_are_listed_at_addresses_prometheus_takes_and_reaches(
    deployment: Deployment,
) -> None:
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    advertised_port = free_port()
    with ExitStack() as stack:
        for name, settings in (
            ("ipv6", {"WORKER_METRICS_HOST": "::1"}),
            # Behind NAT: the port mapped to it, here the one it listens on.
            (
                "advertised",
                {
                    "WORKER_METRICS_HOST": "0.0.0.0",
                    "WORKER_METRICS_PORT": str(advertised_port),
                    "WORKER_METRICS_ADVERTISE": "localhost",
                },
            ),
        ):
            environment = deployment.environment(**settings)
            stack.enter_context(worker(environment, deployment.logs / f"{name}.log", name=name))
        served = stack.enter_context(api(deployment.environment(), deployment.logs / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))
        targets = wait_for(
            lambda: (found := client.get("/metrics/targets").json()) and len(found) == 2 and found,
            10,
            what="both workers listed at /metrics/targets",
        )
        addresses = sorted(address for target in targets for address in target["targets"])
        assert addresses[0].startswith("[::1]:"), addresses
        assert addresses[1] == f"localhost:{advertised_port}", addresses
        for address in addresses:
            # The form Prometheus' http_sd_configs reads: host and port, no scheme.
            url = httpx.URL(f"http://{address}/metrics")
            assert url.port is not None and url.host in ("::1", "localhost")
            scraped = httpx.get(str(url), timeout=5)
            assert scraped.status_code == 200
            assert "jobcache_jobs_running" in scraped.text
