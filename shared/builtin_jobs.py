"""jobcache's built-in job types, declared and implemented here: the default of JOBCACHE_JOBS,
and the example of a job module (docs/job-types.md)."""

import asyncio
import re
import time
from collections import Counter

from pydantic import BaseModel, Field

from shared.catalog import JobParameters, JobResult
from shared.errors import JobFailedError
from shared.jobs import JobContext, job


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


@job(
    summary="Return the message unchanged (used by checks and benchmarks).",
    timeout=10,
)
async def echo(parameters: EchoParameters, context: JobContext) -> EchoResult:
    return EchoResult(message=parameters.message)


WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")


@job(
    summary="Count characters, words and lines of a text and list its most common words.",
    timeout=30,
)
async def text_stats(parameters: TextStatsParameters, context: JobContext) -> TextStatsResult:
    text = parameters.text
    words = [word.casefold() for word in WORD.findall(text)]
    counts = Counter(words)
    return TextStatsResult(
        characters=len(text),
        words=len(words),
        lines=len(text.splitlines()),
        unique_words=len(counts),
        most_common=[
            WordCount(word=word, count=count) for word, count in counts.most_common(parameters.top)
        ],
    )


def count_primes(limit: int) -> tuple[int, int | None]:
    """Sieve of Eratosthenes; runs in a worker's process pool, so it must stay top-level."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for number in range(2, int(limit**0.5) + 1):
        if sieve[number]:
            sieve[number * number :: number] = bytes(len(range(number * number, limit + 1, number)))
    count = sieve.count(1)
    largest = sieve.rfind(1)
    return count, (largest if largest > 0 else None)


@job(
    summary="Count the primes up to a limit, in a separate process (CPU-bound).",
    timeout=120,
    # Heavy: on a queue of its own, so that operators can give it workers of their own
    # (WORKER_QUEUES=cpu) and it never holds up the quick types of the default queue.
    queue="cpu",
)
async def primes(parameters: PrimesParameters, context: JobContext) -> PrimesResult:
    count, largest = await context.run_in_process(count_primes, parameters.limit)
    return PrimesResult(limit=parameters.limit, count=count, largest=largest)


SLEEP_REPORT_INTERVAL = 0.5


@job(
    summary="Sleep for a number of seconds, reporting progress as it goes (long-running).",
    timeout=SLEEP_LIMIT_SECONDS + 10,
)
async def sleep(parameters: SleepParameters, context: JobContext) -> SleepResult:
    total = parameters.seconds
    started = time.monotonic()
    await context.report_progress(0, total, "started")
    elapsed = 0.0
    # The loop ends on the value it last reported, so the last report is exactly `total`: the
    # event loop may wake a sleep up to its clock resolution early, and a loop that tested the
    # clock again could end on a report of 1.499 of 1.5.
    while elapsed < total:
        await asyncio.sleep(min(SLEEP_REPORT_INTERVAL, total - elapsed))
        elapsed = min(total, time.monotonic() - started)
        current = total if elapsed >= total else round(elapsed, 3)
        await context.report_progress(current, total, f"slept {elapsed:.1f}s of {total:g}s")
    return SleepResult(slept=total)


@job(
    summary="Always fail with the given message (shows how a client sees a failure).",
    timeout=10,
)
async def fail(parameters: FailParameters, context: JobContext) -> FailResult:
    raise JobFailedError(parameters.message)
