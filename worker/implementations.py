"""The code behind each job type declared in shared/catalog.py, registered by name."""

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.catalog import (
    ECHO,
    FAIL,
    PRIMES,
    SLEEP,
    TEXT_STATS,
    EchoParameters,
    EchoResult,
    FailParameters,
    FailResult,
    JobParameters,
    JobResult,
    JobType,
    PrimesParameters,
    PrimesResult,
    SleepParameters,
    SleepResult,
    TextStatsParameters,
    TextStatsResult,
    WordCount,
)
from shared.errors import JobFailedError
from worker.context import JobContext

P = TypeVar("P", bound=JobParameters)
Implementation = Callable[[Any, JobContext], Awaitable[JobResult]]

IMPLEMENTATIONS: dict[str, Implementation] = {}


def implements(
    job_type: JobType,
) -> Callable[[Callable[[P, JobContext], Awaitable[JobResult]]], Implementation]:
    """Register a function as the implementation of a declared job type."""

    def register(function: Callable[[P, JobContext], Awaitable[JobResult]]) -> Implementation:
        if job_type.name in IMPLEMENTATIONS:
            raise RuntimeError(f"job type {job_type.name!r} has two implementations")
        IMPLEMENTATIONS[job_type.name] = function
        return function

    return register


@implements(ECHO)
async def echo(parameters: EchoParameters, context: JobContext) -> EchoResult:
    return EchoResult(message=parameters.message)


WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")


@implements(TEXT_STATS)
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


@implements(PRIMES)
async def primes(parameters: PrimesParameters, context: JobContext) -> PrimesResult:
    count, largest = await context.run_in_process(count_primes, parameters.limit)
    return PrimesResult(limit=parameters.limit, count=count, largest=largest)


SLEEP_REPORT_INTERVAL = 0.5


@implements(SLEEP)
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


@implements(FAIL)
async def fail(parameters: FailParameters, context: JobContext) -> FailResult:
    raise JobFailedError(parameters.message)
