"""The job types jobcache runs, each declared once: name, parameters, result and options.

The api validates requests and documents them from these declarations; the worker maps each
name to its implementation (worker/implementations.py). Adding a job type starts here.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field


class JobParameters(BaseModel):
    """Base of every parameter model: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class JobResult(BaseModel):
    """Base of every result model."""


@dataclass(frozen=True)
class JobType:
    """One job type's declaration."""

    name: str
    summary: str
    parameters: type[JobParameters]
    result: type[JobResult]
    timeout: float = 60.0
    """Seconds one attempt may run before it is stopped and counted as failed."""
    retries: int = 0
    """Further attempts after a failed one (a retryable error or a timeout)."""
    retry_delay: float = 1.0
    """Seconds before the first retry; doubled for each later one."""
    result_ttl: int | None = None
    """Seconds the record is kept after it is written; None uses CACHE_TTL."""

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


class EchoParameters(JobParameters):
    message: str = Field(max_length=100_000, description="Any text; returned unchanged.")


class EchoResult(JobResult):
    message: str


class TextStatsParameters(JobParameters):
    text: str = Field(max_length=1_000_000, description="The text to analyse.")
    top: int = Field(default=5, ge=0, le=100, description="How many frequent words to list.")


class WordCount(BaseModel):
    word: str
    count: int


class TextStatsResult(JobResult):
    characters: int
    words: int
    lines: int
    unique_words: int
    most_common: list[WordCount]


class PrimesParameters(JobParameters):
    limit: int = Field(ge=2, le=50_000_000, description="Count the primes up to this number.")


class PrimesResult(JobResult):
    limit: int
    count: int
    largest: int | None


SLEEP_LIMIT_SECONDS = 600.0


class SleepParameters(JobParameters):
    seconds: float = Field(ge=0, le=SLEEP_LIMIT_SECONDS, description="How long to sleep.")


class SleepResult(JobResult):
    slept: float


class FailParameters(JobParameters):
    message: str = Field(
        default="this job always fails", max_length=1000, description="The error to fail with."
    )


class FailResult(JobResult):
    """Never produced: the job always fails."""


ECHO = JobType(
    name="echo",
    summary="Return the message unchanged (used by checks and benchmarks).",
    parameters=EchoParameters,
    result=EchoResult,
    timeout=10,
)
TEXT_STATS = JobType(
    name="text_stats",
    summary="Count characters, words and lines of a text and list its most common words.",
    parameters=TextStatsParameters,
    result=TextStatsResult,
    timeout=30,
)
PRIMES = JobType(
    name="primes",
    summary="Count the primes up to a limit, in a separate process (CPU-bound).",
    parameters=PrimesParameters,
    result=PrimesResult,
    timeout=120,
)
SLEEP = JobType(
    name="sleep",
    summary="Sleep for a number of seconds, reporting progress as it goes (long-running).",
    parameters=SleepParameters,
    result=SleepResult,
    timeout=SLEEP_LIMIT_SECONDS + 10,
)
FAIL = JobType(
    name="fail",
    summary="Always fail with the given message (shows how a client sees a failure).",
    parameters=FailParameters,
    result=FailResult,
    timeout=10,
)

JOB_TYPES: Mapping[str, JobType] = MappingProxyType(
    {job_type.name: job_type for job_type in (ECHO, TEXT_STATS, PRIMES, SLEEP, FAIL)}
)
