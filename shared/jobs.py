"""What a job module imports to declare its job types: `@job` and the `JobContext` its code is
handed. A job type is declared and implemented in one place:

    @job(summary="Resize an image", timeout=30, retries=3)
    async def resize(parameters: Resize, context: JobContext) -> Resized: ...

The name defaults to the function's; the parameter and result models come from its
annotations (pydantic models). JOBCACHE_JOBS names the modules the api and the workers load.
"""

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from shared.catalog import DEFAULT_QUEUE, Implementation, JobType
from shared.cron import CronSchedule
from shared.errors import ConfigurationError
from shared.keys import is_job_id
from shared.parameters import strict

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""A job type's name is a path segment of POST /jobs/{name} and a label of the metrics."""
RESERVED_NAMES = frozenset(("retry",))
"""Names no job type may have: POST /jobs/retry runs failed jobs again (api/routes/retries.py)."""
QUEUE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
"""A queue's name is part of Redis keys and a label of the metrics."""
OPTIONS = (
    "name",
    "summary",
    "timeout",
    "retries",
    "retry_delay",
    "result_ttl",
    "queue",
    "schedule",
    "schedule_parameters",
)


class JobContext(Protocol):
    """What a job's code may use while one attempt of it runs (the worker provides it)."""

    @property
    def job_id(self) -> str: ...

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, and so on."""
        ...

    async def report_progress(
        self, current: float, total: float, message: str | None = None
    ) -> None:
        """Make progress visible to clients reading or waiting on the job's record."""
        ...

    async def run_in_process(self, function: Callable[..., T], *args: object) -> T:
        """Run CPU-bound code in the worker's process pool, off the event loop; `function`
        must be importable (defined at the top level of a module)."""
        ...


def job(
    *,
    name: str | None = None,
    summary: str | None = None,
    timeout: float = 60.0,
    retries: int = 0,
    retry_delay: float = 1.0,
    result_ttl: int | None = None,
    queue: str = DEFAULT_QUEUE,
    schedule: str | None = None,
    schedule_parameters: dict[str, Any] | None = None,
    **unknown: Any,
) -> Callable[[Implementation], JobType]:
    """Declare the decorated async function as a job type.

    `timeout`: seconds one attempt may run. `retries`: further attempts after a failed one
    (a RetryableJobError or a timeout), `retry_delay` seconds before the first, doubled for
    each later one, with jitter. `result_ttl`: seconds the finished record is kept (default
    CACHE_TTL). `queue`: the queue its jobs wait on (WORKER_QUEUES picks a worker's queues).
    `schedule`: a cron expression (UTC; shared/cron.py) at whose due times the workers submit
    a run with `schedule_parameters`. A bad declaration is a ConfigurationError naming the job.
    """

    def declare(function: Implementation) -> JobType:
        where = f"job {getattr(function, '__qualname__', function)!s}"
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown option {', '.join(sorted(unknown))}; the options are "
                f"{', '.join(OPTIONS)}"
            )
        if not inspect.iscoroutinefunction(function):
            raise ConfigurationError(f"{where}: must be an async function (async def)")
        parameters, result = models_of(function, where)
        declared_name = name or function.__name__
        if not NAME_PATTERN.fullmatch(declared_name):
            raise ConfigurationError(
                f"{where}: name {declared_name!r} must be lower-case letters, digits and '_', "
                "starting with a letter"
            )
        if is_job_id(declared_name):
            raise ConfigurationError(
                f"{where}: name {declared_name!r} has 22 characters, as a job id has: "
                f"/jobs/{declared_name} would read as a job's path; choose a shorter or longer name"
            )
        if declared_name in RESERVED_NAMES:
            raise ConfigurationError(
                f"{where}: name {declared_name!r} is taken by a route of the api "
                f"(POST /jobs/{declared_name}); choose another"
            )
        check_options(where, timeout=timeout, retries=retries, retry_delay=retry_delay)
        if result_ttl is not None and result_ttl <= 0:
            raise ConfigurationError(f"{where}: result_ttl must be positive, not {result_ttl!r}")
        if not QUEUE_PATTERN.fullmatch(queue):
            raise ConfigurationError(
                f"{where}: queue {queue!r} must be lower-case letters, digits, '_' and '-', "
                "starting with a letter"
            )
        cron = schedule_of(where, schedule, schedule_parameters, parameters)
        return JobType(
            name=declared_name,
            summary=summary or first_line(function.__doc__) or declared_name,
            parameters=strict(parameters),
            result=result,
            timeout=timeout,
            retries=retries,
            retry_delay=retry_delay,
            result_ttl=result_ttl,
            implementation=function,
            queue=queue,
            schedule=cron,
            schedule_parameters=dict(schedule_parameters or {}),
        )

    return declare


def schedule_of(
    where: str,
    schedule: str | None,
    schedule_parameters: dict[str, Any] | None,
    parameters: type[BaseModel],
) -> CronSchedule | None:
    """The parsed schedule; its parameters must be valid for the job type when it is declared,
    not at the first due time."""
    if schedule is None:
        if schedule_parameters is not None:
            raise ConfigurationError(f"{where}: schedule_parameters without a schedule")
        return None
    try:
        cron = CronSchedule(schedule)
    except ValueError as error:
        raise ConfigurationError(f"{where}: schedule: {error}") from None
    try:
        strict(parameters).model_validate(schedule_parameters or {})
    except ValidationError as error:
        raise ConfigurationError(
            f"{where}: schedule_parameters do not fit {parameters.__name__}: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        ) from None
    return cron


def models_of(function: Implementation, where: str) -> tuple[type[BaseModel], type[BaseModel]]:
    """The parameter and result models from the function's annotations."""
    try:
        hints = typing.get_type_hints(function)
    except Exception as error:  # an annotation that names nothing importable
        raise ConfigurationError(f"{where}: its annotations cannot be read: {error}") from None
    arguments = list(inspect.signature(function).parameters)
    if len(arguments) != 2:
        raise ConfigurationError(
            f"{where}: must take two arguments, (parameters: YourModel, context: JobContext)"
        )
    parameters, result = hints.get(arguments[0]), hints.get("return")
    if not is_model(parameters):
        raise ConfigurationError(
            f"{where}: annotate its first argument with the pydantic model of its parameters"
        )
    if not is_model(result):
        raise ConfigurationError(
            f"{where}: annotate its return with the pydantic model of its result"
        )
    return parameters, result


def is_model(annotation: object) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def check_options(where: str, *, timeout: float, retries: int, retry_delay: float) -> None:
    if not timeout > 0:
        raise ConfigurationError(f"{where}: timeout must be positive, not {timeout!r}")
    if retries < 0:
        raise ConfigurationError(f"{where}: retries must be 0 or more, not {retries!r}")
    if retry_delay < 0:
        raise ConfigurationError(f"{where}: retry_delay must be 0 or more, not {retry_delay!r}")


def first_line(text: str | None) -> str:
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""
