"""The one settings object, read from the environment and `.env` when a process starts."""

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError

CacheBackend = Literal["local", "redis"]


class Settings(BaseSettings):
    """Every setting jobcache reads; each field is one environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    cache_backend: CacheBackend = Field(
        default="local",
        description="local: one process, queue and results in memory; redis: api and workers "
        "share Redis.",
    )
    redis_host: str = "127.0.0.1"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_password: SecretStr | None = None
    redis_queue_db: int = Field(default=0, ge=0, description="Redis database of the arq queue.")
    redis_cache_db: int = Field(default=1, ge=0, description="Redis database of the cache.")
    redis_connect_timeout: float = Field(
        default=3.0, gt=0, description="Seconds to wait for Redis before giving up."
    )
    cache_namespace: str = Field(
        default="jobcache",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every cache key and of the queue name.",
    )
    cache_ttl: int = Field(
        default=300, gt=0, description="Seconds a job record or cached response is kept."
    )
    worker_concurrency: int = Field(
        default=10, ge=1, description="Jobs one worker process runs at once."
    )
    cpu_workers: int = Field(
        default_factory=lambda: max(1, min(4, os.cpu_count() or 1)),
        ge=1,
        description="Processes that run CPU-bound job code off the event loop.",
    )
    worker_fallback_poll: float = Field(
        default=1.0,
        gt=0,
        description="Seconds an idle worker waits for a wake-up before it looks at the queue "
        "anyway (the bound on a job's delay when a wake-up is lost).",
    )
    job_wait_max: float = Field(
        default=60.0, ge=0, description="Longest `?wait` a client may ask of GET /jobs/{id}."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def queue_name(self) -> str:
        """The arq queue's key; namespaced so that two deployments on one Redis stay apart."""
        return f"{self.cache_namespace}:queue"


def describe_problem(issue: Mapping[str, Any]) -> str:
    """One validation problem, named by its environment variable; a secret's value is not shown."""
    variable = "_".join(str(part) for part in issue["loc"]).upper()
    shown = "" if "PASSWORD" in variable else f" (got {issue['input']!r})"
    return f"{variable}: {issue['msg']}{shown}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; turn a bad value into an error that names its variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(describe_problem(issue) for issue in error.errors())
        raise ConfigurationError(f"invalid settings: {problems}") from None
