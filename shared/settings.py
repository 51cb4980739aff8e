"""The one settings object, read from the environment and `.env` when a process starts."""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError
from shared.host_port import split_host_port
from shared.keys import Keys
from shared.webhooks.addresses import AllowedHosts
from shared.webhooks.signing import secret_problem

CacheBackend = Literal["local", "redis"]


@dataclass(frozen=True)
class RedisAddress:
    """One Redis server and database: the queue's or the cache's. With Sentinel, `sentinels`
    and `sentinel_master` say where to find the server, and `host` and `port` are unused."""

    host: str
    port: int
    password: SecretStr | None
    db: int
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None

    def __str__(self) -> str:
        if self.sentinel_master is not None:
            return f"Redis master {self.sentinel_master!r} (through Sentinel)"
        return f"Redis at {self.host}:{self.port}"


SENTINEL_ADDRESS = re.compile(r"^\s*([^\s:,]+):(\d{1,5})\s*$")


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
    redis_username: str | None = Field(
        default=None, description="Redis ACL user (with REDIS_PASSWORD); default: `default`."
    )
    redis_tls: bool = Field(
        default=False, description="Connect to Redis over TLS (the rediss:// scheme)."
    )
    redis_tls_ca_file: str | None = Field(
        default=None, description="CA bundle to verify Redis's TLS certificate with."
    )
    redis_queue_db: int = Field(default=0, ge=0, description="Redis database of the arq queue.")
    redis_cache_db: int = Field(default=1, ge=0, description="Redis database of the cache.")
    cache_redis_host: str | None = Field(
        default=None, description="Host of the cache's Redis, if not the queue's (REDIS_HOST)."
    )
    cache_redis_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the cache's Redis; default REDIS_PORT."
    )
    cache_redis_password: SecretStr | None = Field(
        default=None, description="Password of the cache's Redis; default REDIS_PASSWORD."
    )
    redis_sentinels: str = Field(
        default="",
        description="Comma-separated host:port of the Redis Sentinels; when set, every Redis "
        "client finds the master through them and follows a failover.",
    )
    redis_sentinel_master: str | None = Field(
        default=None, description="The name the Sentinels know the master by (of the queue)."
    )
    cache_redis_sentinel_master: str | None = Field(
        default=None,
        description="The Sentinels' name of the cache's master, if not the queue's.",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="Password of the Sentinels themselves, if they ask for one."
    )
    redis_min_replicas_ack: int = Field(
        default=0,
        ge=0,
        description="Replicas that must have each accepted job and each outcome (Redis WAIT) "
        "before the api answers 202 and before a worker marks a job finished; 0: off.",
    )
    redis_replica_ack_timeout: float = Field(
        default=1.0,
        gt=0,
        description="Seconds one wait for the replicas' acknowledgement may take.",
    )
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
    failed_job_ttl: int = Field(
        default=7 * 24 * 60 * 60,
        gt=0,
        description="Seconds a job that ended failed, cancelled or expired is kept, its record "
        "and its parameters, so that it can be read and run again (POST /jobs/{id}/retry), "
        "whatever CACHE_TTL says.",
    )
    response_cache_near_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Longest time an api process keeps its own copy of a cached response: the "
        "bound on serving a response after it was invalidated.",
    )
    response_cache_near_entries: int = Field(
        default=10_000, ge=0, description="Responses each api process keeps its own copy of."
    )
    response_cache_timeout: float = Field(
        default=0.2, gt=0, description="Seconds one response-cache call to Redis may take."
    )
    response_cache_breaker_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Seconds the response cache skips Redis after it stopped answering.",
    )
    response_cache_lock_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longest time one process fills a missing response while the others wait.",
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
    worker_queues: str = Field(
        default="",
        pattern=r"^\s*([a-z][a-z0-9_-]*(\s*,\s*[a-z][a-z0-9_-]*)*)?\s*$",
        description="Comma-separated queues a worker serves (empty: every queue a job type "
        "is on), so that heavy job types get workers of their own.",
    )
    worker_lease: float = Field(
        default=5.0,
        gt=0,
        description="Seconds after a worker dies before its running jobs may run elsewhere.",
    )
    worker_shutdown_grace: int = Field(
        default=20,
        ge=0,
        description="Seconds a worker stopped with SIGTERM lets running jobs finish before it "
        "puts them back on the queue.",
    )
    job_wait_max: float = Field(
        default=60.0, ge=0, description="Longest `?wait` a client may ask of GET /jobs/{id}."
    )
    max_request_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body the api reads; a larger one is refused with 413.",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated API keys; when set, /jobs needs `Authorization: Bearer "
        "<key>` and each key sees only its own jobs. Empty: open.",
    )
    admin_api_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated admin keys: each may do what an API key may (with jobs "
        "of its own) and use the admin routes too, such as DELETE /cached. Needs API_KEYS.",
    )
    quota_jobs_in_flight: int = Field(
        default=0, ge=0, description="Unfinished jobs one API key may have (0: no limit)."
    )
    quota_submissions_per_second: int = Field(
        default=0, ge=0, description="Jobs one API key may submit per second (0: no limit)."
    )
    max_batch: int = Field(
        default=1000,
        ge=1,
        description="Most parameter sets one POST /jobs/{name}/batch may carry.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs callbacks (Standard Webhooks: `whsec_` and base64, as "
        "its libraries take it); needed for a submission to name a callback_url.",
    )
    webhook_allowed_hosts: str = Field(
        default="",
        description="Comma-separated hosts callbacks may go to (`*.example.com` for a domain's "
        "subdomains, `*` for any public host); a private, loopback or link-local address is "
        "refused unless its host or address is listed by name. Empty: callbacks are off.",
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, description="Seconds one callback delivery may take."
    )
    webhook_retry_for: float = Field(
        default=3600.0,
        gt=0,
        le=86400,
        description="Seconds a failing callback is retried (exponential backoff with jitter) "
        "before it is given up; at most a day, as long as a pending callback keeps its record.",
    )
    webhook_retry_first: float = Field(
        default=1.0,
        gt=0,
        description="Seconds before the first retry of a failed callback, doubled for each "
        "later one up to 5 minutes, each drawn at random below that (full jitter).",
    )
    jobcache_jobs: str = Field(
        default="shared.builtin_jobs",
        pattern=r"^\s*[A-Za-z_][\w.]*(\s*,\s*[A-Za-z_][\w.]*)*\s*$",
        description="Comma-separated importable modules whose @job functions are the job types "
        "the api serves and the workers run.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["plain", "json"] = Field(
        default="plain",
        description="plain: readable lines for a developer; json: one JSON object per line, "
        "for log collectors.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address a worker's metrics and health endpoint listens on (0.0.0.0: all).",
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of a worker's metrics and health endpoint; 0: any free port (each "
        "worker announces its address in its heartbeat).",
    )
    worker_metrics_advertise: str | None = Field(
        default=None,
        description="host or host:port a worker announces for its endpoint (GET "
        "/metrics/targets) instead of the one it finds, where others reach it by another "
        "address (NAT, containers); an IPv6 address with a port as [address]:port. Without a "
        "port, the port it listens on.",
    )

    @property
    def api_key_list(self) -> list[str]:
        """The configured API keys, without blanks; empty when the api is open."""
        return comma_separated_secrets(self.api_keys)

    @property
    def admin_api_key_list(self) -> list[str]:
        """The configured admin keys, without blanks; empty when no key may administer."""
        return comma_separated_secrets(self.admin_api_keys)

    @property
    def job_modules(self) -> list[str]:
        """The modules JOBCACHE_JOBS names, in order."""
        return [name.strip() for name in self.jobcache_jobs.split(",")]

    @property
    def keys(self) -> Keys:
        """The names of every key and channel of this deployment (shared/keys.py)."""
        return Keys(self.cache_namespace)

    @property
    def served_queues(self) -> list[str]:
        """The queues WORKER_QUEUES names, each once, in order; empty for every queue."""
        names = [name.strip() for name in self.worker_queues.split(",") if name.strip()]
        return list(dict.fromkeys(names))

    @field_validator("webhook_secret", "admin_api_keys", "worker_metrics_advertise", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """`WEBHOOK_SECRET=` (as .env.example has it) means no secret, and so on."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_signs(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = secret_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _hosts_are_hosts(cls, value: str) -> str:
        AllowedHosts.parse(value)  # a ValueError names the bad entry
        return value

    @field_validator("worker_metrics_advertise")
    @classmethod
    def _advertise_is_host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)  # a ValueError says what is wrong
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_addresses(cls, value: str) -> str:
        for entry in filter(str.strip, value.split(",")):
            match = SENTINEL_ADDRESS.fullmatch(entry)
            if match is None or not 1 <= int(match[2]) <= 65535:
                raise ValueError(f"{entry.strip()!r} is not host:port (give host:port,host:port)")
        return value

    @model_validator(mode="after")
    def _admin_keys_need_api_keys(self) -> "Settings":
        # Admin keys alone surprise whichever way they are read: ignored, the admin routes stay
        # open while the operator believes them closed; obeyed, they close and /jobs stays open.
        if self.admin_api_key_list and not self.api_key_list:
            raise ValueError(
                "ADMIN_API_KEYS is set but API_KEYS is not: without API_KEYS the api is open to "
                "anyone, admin routes included; set API_KEYS too"
            )
        return self

    @model_validator(mode="after")
    def _sentinel_settings_agree(self) -> "Settings":
        if self.sentinels and not self.redis_sentinel_master:
            raise ValueError(
                "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: name the master the "
                "Sentinels monitor"
            )
        if not self.sentinels and (self.redis_sentinel_master or self.cache_redis_sentinel_master):
            raise ValueError(
                "REDIS_SENTINEL_MASTER or CACHE_REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS "
                "is not: give the Sentinels' host:port"
            )
        return self

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        """The Sentinels REDIS_SENTINELS names; empty without Sentinel."""
        found = (SENTINEL_ADDRESS.fullmatch(entry) for entry in self.redis_sentinels.split(","))
        return tuple((match[1], int(match[2])) for match in found if match is not None)

    @property
    def queue_redis(self) -> RedisAddress:
        """The Redis of the arq queue; it must never evict keys."""
        return RedisAddress(
            self.redis_host,
            self.redis_port,
            self.redis_password,
            self.redis_queue_db,
            self.sentinels,
            self.redis_sentinel_master if self.sentinels else None,
        )

    @property
    def cache_redis(self) -> RedisAddress:
        """The Redis of the cache: the queue's server unless CACHE_REDIS_* (or, with Sentinel,
        CACHE_REDIS_SENTINEL_MASTER) name another."""
        return RedisAddress(
            self.cache_redis_host or self.redis_host,
            self.cache_redis_port or self.redis_port,
            self.cache_redis_password or self.redis_password,
            self.redis_cache_db,
            self.sentinels,
            (self.cache_redis_sentinel_master or self.redis_sentinel_master)
            if self.sentinels
            else None,
        )


def comma_separated_secrets(value: SecretStr | None) -> list[str]:
    """The entries of a comma-separated secret setting, without blanks."""
    if value is None:
        return []
    return [entry.strip() for entry in value.get_secret_value().split(",") if entry.strip()]


def describe_problem(issue: Mapping[str, Any]) -> str:
    """One validation problem, named by its environment variable; a secret's value is not shown."""
    variable = "_".join(str(part) for part in issue["loc"]).upper()
    if not variable:  # a check of several settings, whose message names them
        return str(issue["msg"]).removeprefix("Value error, ")
    secret = any(word in variable for word in ("PASSWORD", "SECRET", "KEYS"))
    shown = "" if secret else f" (got {issue['input']!r})"
    return f"{variable}: {issue['msg']}{shown}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; turn a bad value into an error that names its variable.

    JOBCACHE_ENV_FILE names another env file than `.env` (empty: none at all).
    """
    env_file = os.environ.get("JOBCACHE_ENV_FILE", ".env") or None
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as error:
        problems = "; ".join(describe_problem(issue) for issue in error.errors())
        raise ConfigurationError(f"invalid settings: {problems}") from None
