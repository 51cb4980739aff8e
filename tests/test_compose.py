"""docker-compose.yml, checked by parsing it: what it says and how its parts agree.
tests/test_compose_stack.py runs it for real, with podman."""

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def command_of(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


SENTINEL_PROFILE = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
SENTINELS = ["sentinel-1", "sentinel-2", "sentinel-3"]


def started_by_up(compose: dict[str, Any], *profiles: str) -> set[str]:
    """The services `docker compose up` starts, given these `--profile`s."""
    return {
        name
        for name, service in compose["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def test_compose_runs_redis_redisinsight_api_and_worker(compose: dict[str, Any]) -> None:
    assert started_by_up(compose) == {
        "redis",
        "cache-redis",
        "redisinsight",
        "api",
        "worker",
        "worker-cpu",
    }
    assert set(compose["services"]) == started_by_up(compose) | SENTINEL_PROFILE


def test_redis_takes_its_password_from_env_and_keeps_an_append_only_file(
    compose: dict[str, Any],
) -> None:
    redis = command_of(compose["services"]["redis"])
    assert re.search(r"--requirepass \$\{REDIS_PASSWORD", redis)
    assert "--appendonly yes" in redis
    assert "/data" in compose["services"]["redis"]["volumes"][0]


def test_redisinsight_is_reachable_on_host_port_8001(compose: dict[str, Any]) -> None:
    ports = compose["services"]["redisinsight"]["ports"]
    assert any(str(port).startswith("8001:") for port in ports)


def test_the_api_is_published_on_8000_unless_api_port_says_otherwise(
    compose: dict[str, Any],
) -> None:
    assert compose["services"]["api"]["ports"] == ["${API_PORT:-8000}:8000"]


def test_images_are_named_in_full_and_are_those_the_compose_test_stands_in_for(
    compose: dict[str, Any],
) -> None:
    """A short name (`redis:7-alpine`) resolves only on an engine with unqualified-search
    registries; tests/compose/images.sh tags its stand-ins with the full names."""
    images = {service["image"] for service in compose["services"].values() if "image" in service}
    [base] = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    for image in [*images, base]:
        registry = image.split("/")[0]
        assert "." in registry and image.count("/") >= 2, image
    script = (ROOT / "tests" / "compose" / "images.sh").read_text()
    assert f"readonly PYTHON_IMAGE={base}\n" in script
    assert "readonly REDIS_IMAGE=docker.io/library/redis:7-alpine\n" in script
    assert compose["services"]["redis"]["image"] == "docker.io/library/redis:7-alpine"


def test_the_cache_database_is_the_one_env_example_and_the_default_name() -> None:
    """The compose file's default, .env.example (which its header says to copy) and jobcache's
    own default agree: the same database whether or not .env sets it, on cache-redis and on the
    Sentinels' master alike."""
    from shared.settings import Settings

    text = (ROOT / "docker-compose.yml").read_text()
    [default] = re.findall(r"REDIS_CACHE_DB: \$\{REDIS_CACHE_DB:-(\d+)\}", text)
    [example] = re.findall(
        r"^REDIS_CACHE_DB=(\d+)$", (ROOT / ".env.example").read_text(), re.MULTILINE
    )
    assert int(default) == int(example) == Settings.model_fields["redis_cache_db"].default


def test_api_and_worker_run_the_documented_commands_against_redis(
    compose: dict[str, Any],
) -> None:
    """The commands docs/operations.md gives for running with Redis are the compose file's."""
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name, expected in (
        ("api", "uvicorn api.main:app --host 0.0.0.0 --port 8000"),
        ("worker", "python -m worker"),
        ("worker-cpu", "python -m worker"),
    ):
        service = compose["services"][name]
        assert command_of(service) == expected
        assert expected in operations
        environment = service["environment"]
        assert environment["CACHE_BACKEND"] == "redis"
        assert environment["REDIS_HOST"] == "redis"
        assert environment["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_queue_redis_never_evicts_and_the_cache_redis_does(compose: dict[str, Any]) -> None:
    queue = command_of(compose["services"]["redis"])
    cache = command_of(compose["services"]["cache-redis"])
    assert "--maxmemory-policy noeviction" in queue
    # Every key of the cache has a TTL; an unfinished job's record has the longest.
    assert "--maxmemory-policy volatile-ttl" in cache
    assert re.search(r"--maxmemory \d+[kmg]b", cache)
    assert re.search(r"--requirepass \$\{REDIS_PASSWORD", cache)
    for name in ("api", "worker", "worker-cpu"):
        service = compose["services"][name]
        assert service["environment"]["CACHE_REDIS_HOST"] == "cache-redis"
        assert service["depends_on"]["cache-redis"]["condition"] == "service_healthy"


def test_the_queue_and_the_cache_each_keep_an_append_only_file_on_a_volume(
    compose: dict[str, Any],
) -> None:
    """A restart keeps the queued jobs (redis) and what their clients were given (cache-redis:
    their records, lists and Idempotency-Keys), which the workers only update; the cache still
    evicts as it did."""
    sources = set()
    for name in ("redis", "cache-redis"):
        service = compose["services"][name]
        assert "--appendonly yes" in command_of(service), name
        [volume] = service["volumes"]
        source, target = volume.split(":")
        assert target == "/data" and source in compose["volumes"], name
        sources.add(source)
    assert len(sources) == 2
    assert "--maxmemory-policy volatile-ttl" in command_of(compose["services"]["cache-redis"])


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    """`--scale worker=N` fails on a fixed container name or a published host port."""
    for name in ("worker", "worker-cpu"):
        worker = compose["services"][name]
        assert "container_name" not in worker
        assert "ports" not in worker


def test_the_cpu_queue_has_workers_of_its_own(compose: dict[str, Any]) -> None:
    """Every queue of the built-in job types is served by exactly one worker service, so that
    each scales on its own, and no job type's queue is left without a worker."""
    from shared.builtin_jobs import primes
    from shared.catalog import load_catalog

    catalog = load_catalog(["shared.builtin_jobs"])
    assert primes.queue == "cpu"
    served = {
        name: compose["services"][name]["environment"]["WORKER_QUEUES"]
        for name in ("worker", "worker-cpu")
    }
    assert served == {"worker": "default", "worker-cpu": "cpu"}
    assert sorted(served.values()) == sorted(catalog.queues)


def test_env_example_documents_every_setting() -> None:
    from shared.settings import Settings

    example = (ROOT / ".env.example").read_text()
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for field in Settings.model_fields:
        assert field.upper() in example, f"{field.upper()} missing from .env.example"
        assert re.search(rf"^\| `{field.upper()}` \|", reference, re.MULTILINE), (
            f"{field.upper()} missing from docs/configuration.md's table of settings"
        )
    assert re.search(r"^CACHE_BACKEND=redis$", example, re.MULTILINE)


def test_compose_requires_api_keys_and_gives_workers_their_grace(
    compose: dict[str, Any],
) -> None:
    for name in ("api", "worker", "worker-cpu"):
        assert compose["services"][name]["environment"]["API_KEYS"].startswith("${API_KEYS:?")
    for name in ("worker", "worker-cpu"):
        grace = compose["services"][name]["stop_grace_period"]
        assert int(grace.removesuffix("s")) > 20, f"{name} would be killed before its grace"


def sentinel_configuration(service: dict[str, Any]) -> list[str]:
    """The lines a Sentinel service writes to its configuration file at its first start: the
    arguments of the `printf` of its `sh -c` command, as the shell reads them."""
    shell, option, script = service["command"]
    assert (shell, option) == ("sh", "-c")
    # `$$` is compose's escape of `$`: the shell reads the variable when the container starts.
    words = shlex.split(script.replace("$$", "$"))
    start = words.index("printf") + 2
    return words[start : words.index(">", start)]


def test_the_sentinel_profile_starts_a_replica_and_three_sentinels_only_when_asked(
    compose: dict[str, Any],
) -> None:
    assert started_by_up(compose, "sentinel") - started_by_up(compose) == SENTINEL_PROFILE
    for name in SENTINEL_PROFILE:
        assert compose["services"][name]["profiles"] == ["sentinel"], name
    # A service started without the profile must not need one that is not.
    for name in started_by_up(compose):
        assert not set(compose["services"][name].get("depends_on", {})) & SENTINEL_PROFILE


def test_the_replica_replicates_redis_with_the_password(compose: dict[str, Any]) -> None:
    replica = compose["services"]["redis-replica"]
    command = command_of(replica)
    assert "--replicaof redis 6379" in command
    assert re.search(r"--masterauth \$\{REDIS_PASSWORD", command)
    assert re.search(r"--requirepass \$\{REDIS_PASSWORD", command)
    # Once promoted it is the queue: it keeps its data and never evicts, as `redis` does.
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert replica["depends_on"]["redis"]["condition"] == "service_healthy"


def test_three_sentinels_monitor_the_same_master_with_quorum_two(compose: dict[str, Any]) -> None:
    monitored = set()
    for name in SENTINELS:
        service = compose["services"][name]
        lines = sentinel_configuration(service)
        assert "port 26379" in lines
        [monitor] = [line for line in lines if line.startswith("sentinel monitor ")]
        _, _, master_name, host, port, quorum = monitor.split()
        monitored.add((master_name, host, port, quorum))
        # A hostname in `sentinel monitor` is refused unless resolving them was enabled first.
        assert "sentinel resolve-hostnames yes" in lines
        assert lines.index("sentinel resolve-hostnames yes") < lines.index(monitor)
        assert f'sentinel auth-pass {master_name} "$REDIS_PASSWORD"' in lines
        assert service["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
        assert command_of(service).endswith("redis-server /data/sentinel.conf --sentinel")
        assert "> /data/sentinel.conf" in command_of(service)
        assert service["healthcheck"]["test"][-3:] == ["-p", "26379", "ping"]
    assert monitored == {("jobcache", "redis", "6379", "2")}


def test_each_sentinel_is_known_by_its_service_name_and_an_id_of_that_name(
    compose: dict[str, Any],
) -> None:
    """Sentinels record each other as they announce themselves: by default a container's
    address, which changes when it is recreated, leaving a stale entry that counts towards the
    majority a failover needs. Each announces its service's name instead, and its id is that
    name's digest, so that a recreated Sentinel, with a new file, is the same one to the rest."""
    for name in SENTINELS:
        service = compose["services"][name]
        assert service["environment"]["SENTINEL_HOSTNAME"] == name
        lines = sentinel_configuration(service)
        assert "sentinel announce-hostnames yes" in lines
        assert "sentinel announce-ip $SENTINEL_HOSTNAME" in lines
        [myid] = [line for line in lines if line.startswith("sentinel myid ")]
        assert myid == "sentinel myid $(printf %s $SENTINEL_HOSTNAME | sha1sum | cut -c1-40)"
    # The old master is known by name as well once it has become a replica.
    for name in ("redis", "redis-replica"):
        assert f"--replica-announce-ip {name}" in command_of(compose["services"][name])


def test_the_sentinel_profile_says_how_to_point_jobcache_at_it() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    [sentinels] = re.findall(r"^\s*#\s*REDIS_SENTINELS=(\S+)$", text, re.MULTILINE)
    [master_name] = re.findall(r"^\s*#\s*REDIS_SENTINEL_MASTER=(\S+)$", text, re.MULTILINE)
    assert sentinels.split(",") == [f"{name}:26379" for name in SENTINELS]
    assert master_name == "jobcache"
