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

from pydantic import BaseModel, ConfigDict

from shared.catalog import Implementation, JobType
from shared.errors import ConfigurationError

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""A job type's name is a path segment of POST /jobs/{name} and a label of the metrics."""
OPTIONS = ("name", "summary", "timeout", "retries", "retry_delay", "result_ttl")


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
    **unknown: Any,
) -> Callable[[Implementation], JobType]:
    """Declare the decorated async function as a job type.

    `timeout`: seconds one attempt may run. `retries`: further attempts after a failed one
    (a RetryableJobError or a timeout), `retry_delay` seconds before the first, doubled for
    each later one, with jitter. `result_ttl`: seconds the finished record is kept (default
    CACHE_TTL). A bad declaration is a ConfigurationError naming the job.
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
        check_options(where, timeout=timeout, retries=retries, retry_delay=retry_delay)
        if result_ttl is not None and result_ttl <= 0:
            raise ConfigurationError(f"{where}: result_ttl must be positive, not {result_ttl!r}")
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
        )

    return declare


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


def strict(model: type[BaseModel]) -> type[BaseModel]:
    """The parameter model, refusing unknown fields unless it says otherwise: a misspelt
    parameter is an error the client sees, not a default silently used."""
    if model.model_config.get("extra") is not None:
        return model
    config = ConfigDict(**{**model.model_config, "extra": "forbid"})
    strict_model: type[BaseModel] = type(
        model.__name__, (model,), {"model_config": config, "__module__": model.__module__}
    )
    return strict_model


def first_line(text: str | None) -> str:
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""
