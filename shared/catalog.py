"""The job types a deployment runs, each declared once (name, parameters, result, options and
the code that runs it), and the catalog of them that a process loads at startup from the
modules JOBCACHE_JOBS names.

The api validates requests and documents them from these declarations; the worker and the
embedded worker run their code. Job types are declared with `@job` (shared/jobs.py).
"""

import importlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.cron import CronSchedule
from shared.errors import ConfigurationError

DEFAULT_QUEUE = "default"

Implementation = Callable[[Any, Any], Awaitable[Any]]
"""A job's code: `async def run(parameters, context) -> result`."""


class JobParameters(BaseModel):
    """A base for parameter models: unknown fields are errors, not silently dropped (`@job`
    makes any parameter model so)."""

    model_config = ConfigDict(extra="forbid")


class JobResult(BaseModel):
    """A base for result models: the worker stores a result with every field, so its OpenAPI
    marks each one required."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


@dataclass(frozen=True)
class JobType:
    """One job type's declaration."""

    name: str
    summary: str
    parameters: type[BaseModel]
    result: type[BaseModel]
    timeout: float = 60.0
    """Seconds one attempt may run before it is stopped and counted as failed."""
    retries: int = 0
    """Further attempts after a failed one (a retryable error or a timeout)."""
    retry_delay: float = 1.0
    """Seconds before the first retry; doubled for each later one."""
    result_ttl: int | None = None
    """Seconds the record is kept after it is written; None uses CACHE_TTL."""
    implementation: Implementation | None = None
    """The job's code (`@job` sets it); a declaration without code fails each attempt."""
    queue: str = DEFAULT_QUEUE
    """The queue its jobs wait on; WORKER_QUEUES says which queues a worker serves."""
    schedule: CronSchedule | None = None
    """When set, the workers submit a run of it at each due time (UTC), exactly once."""
    schedule_parameters: Mapping[str, Any] = field(default_factory=dict)
    """The parameters of each scheduled run, as JSON data (validated when declared)."""

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def __call__(self, parameters: Any, context: Any) -> Awaitable[Any]:
        """Run the job's code directly (in a unit test of a job, say)."""
        if self.implementation is None:
            raise TypeError(f"job type {self.name!r} has no code")
        return self.implementation(parameters, context)


class Catalog(Mapping[str, JobType]):
    """The job types of one process, by name."""

    def __init__(self, job_types: Sequence[JobType]) -> None:
        self._by_name = {job_type.name: job_type for job_type in job_types}

    def __getitem__(self, name: str) -> JobType:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def queues(self) -> list[str]:
        """The queues its job types are on, each once, the default queue first."""
        return sorted({job_type.queue for job_type in self.values()}, key=_default_first)

    @property
    def scheduled(self) -> list[JobType]:
        return [job_type for job_type in self.values() if job_type.schedule is not None]


def _default_first(queue: str) -> tuple[bool, str]:
    return queue != DEFAULT_QUEUE, queue


def declared_in(module: ModuleType) -> list[JobType]:
    """The job types a module declares itself (not those it imports from another module)."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, JobType)
        and value.implementation is not None
        and value.implementation.__module__ == module.__name__
    ]


def load_catalog(module_names: Sequence[str]) -> Catalog:
    """Import the job modules and gather their job types; any problem is a ConfigurationError
    that names JOBCACHE_JOBS, the module and, where there is one, the job."""
    found: dict[str, tuple[str, JobType]] = {}
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ConfigurationError as error:
            raise ConfigurationError(f"JOBCACHE_JOBS: module {module_name!r}: {error}") from None
        except Exception as error:  # whatever a user's module raises while it is imported
            raise ConfigurationError(
                f"JOBCACHE_JOBS: cannot import module {module_name!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        declared = declared_in(module)
        if not declared:
            raise ConfigurationError(
                f"JOBCACHE_JOBS: module {module_name!r} declares no job type (decorate an async "
                "function with @job from shared.jobs)"
            )
        for job_type in declared:
            if job_type.name in found:
                first_module, _ = found[job_type.name]
                raise ConfigurationError(
                    f"JOBCACHE_JOBS: two job types are named {job_type.name!r}: one in module "
                    f"{first_module!r}, one in module {module_name!r}"
                )
            found[job_type.name] = (module_name, job_type)
    return Catalog([job_type for _, job_type in found.values()])
