"""Settings: read once when a process starts, with errors that name the setting."""

from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

from api.main import create_app
from shared.errors import ConfigurationError
from shared.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No jobcache variable and no .env from the developer's machine leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    for variable in ("CACHE_BACKEND", "REDIS_PASSWORD", "CACHE_NAMESPACE", "CACHE_TTL"):
        monkeypatch.delenv(variable, raising=False)


def test_backend_defaults_to_local_so_the_quick_start_needs_no_redis() -> None:
    assert load_settings().cache_backend == "local"


def test_unknown_backend_is_an_error_naming_the_setting_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "memcached")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    message = str(raised.value)
    assert "CACHE_BACKEND" in message and "'local'" in message and "'redis'" in message
    assert "memcached" in message


def test_settings_come_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CACHE_BACKEND=redis\nCACHE_TTL=42\n")
    settings = load_settings()
    assert (settings.cache_backend, settings.cache_ttl) == ("redis", 42)


def test_password_never_shows_in_reprs_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2-secret")
    settings = load_settings()
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings) + str(settings)

    monkeypatch.setenv("CACHE_TTL", "-1")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "CACHE_TTL" in str(raised.value)
    assert "hunter2-secret" not in str(raised.value)


async def test_the_app_reads_its_settings_when_it_starts_not_when_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app()
    monkeypatch.setenv("CACHE_NAMESPACE", "read-at-startup")
    async with LifespanManager(app):
        assert app.state.services.settings.cache_namespace == "read-at-startup"


async def test_the_app_refuses_to_start_with_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "disk")
    with pytest.raises(ConfigurationError, match="CACHE_BACKEND"):
        async with LifespanManager(create_app()):
            pass


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        (
            {"REDIS_SENTINELS": "nohost", "REDIS_SENTINEL_MASTER": "m"},
            ["REDIS_SENTINELS", "nohost"],
        ),
        (
            {"REDIS_SENTINELS": "a:1,b:99999", "REDIS_SENTINEL_MASTER": "m"},
            ["REDIS_SENTINELS", "b:99999"],
        ),
        ({"REDIS_SENTINELS": "a:26379"}, ["REDIS_SENTINEL_MASTER"]),
        ({"REDIS_SENTINEL_MASTER": "m"}, ["REDIS_SENTINELS"]),
        ({"REDIS_MIN_REPLICAS_ACK": "-1"}, ["REDIS_MIN_REPLICAS_ACK"]),
        ({"WORKER_QUEUES": "default,CPU!"}, ["WORKER_QUEUES"]),
    ],
)
def test_sentinel_and_queue_settings_that_cannot_work_are_errors_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: list[str]
) -> None:
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    for part in named:
        assert part in str(raised.value), str(raised.value)


def test_with_sentinels_both_stores_find_their_master_through_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "s1:26379, s2:26380,s3:26381")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "jobs")
    monkeypatch.setenv("CACHE_REDIS_SENTINEL_MASTER", "cache")
    settings = load_settings()
    sentinels = (("s1", 26379), ("s2", 26380), ("s3", 26381))
    assert (settings.queue_redis.sentinels, settings.queue_redis.sentinel_master) == (
        sentinels,
        "jobs",
    )
    assert settings.cache_redis.sentinel_master == "cache"
    assert str(settings.queue_redis) == "Redis master 'jobs' (through Sentinel)"


def test_worker_queues_are_read_in_order_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_QUEUES", " cpu, default ,cpu")
    assert load_settings().served_queues == ["cpu", "default"]
    monkeypatch.setenv("WORKER_QUEUES", "")
    assert load_settings().served_queues == []


async def test_admin_keys_without_api_keys_stop_the_api_naming_both_never_the_keys(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.setenv("ADMIN_API_KEYS", "admin-key-7d1e0c9b8a")
    with pytest.raises(ConfigurationError) as raised:
        async with LifespanManager(create_app()):
            pass
    message = str(raised.value)
    assert "ADMIN_API_KEYS is set but API_KEYS is not" in message
    assert "admin-key-7d1e0c9b8a" not in message + caplog.text

    monkeypatch.setenv("API_KEYS", "user-key-5c4b3a2f1e")
    monkeypatch.setenv("ADMIN_API_KEYS", " admin-key-7d1e0c9b8a, ,second-admin-key ")
    settings = load_settings()
    assert settings.admin_api_key_list == ["admin-key-7d1e0c9b8a", "second-admin-key"]
    assert "admin-key-7d1e0c9b8a" not in repr(settings) + str(settings)
    monkeypatch.delenv("API_KEYS")
    monkeypatch.setenv("ADMIN_API_KEYS", "")
    assert load_settings().admin_api_key_list == [], "empty, as .env.example has it: unset"
