"""Per-key quotas: unfinished jobs and submissions per second. The port is here; its backends
are shared/quotas/memory.py (the local mode) and shared/quotas/redis.py (counts shared by every
api process).

A submission (shared/submission.py) admits its jobs before queuing them, each job counted, all
or none; whoever ends a job (the runner, or the api when it cancels a queued job) releases it,
right after writing the finished record, and a submission that fails releases its jobs.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.errors import QuotaExceededError


@dataclass(frozen=True)
class Limits:
    jobs_in_flight: int
    """0: no limit."""
    submissions_per_second: int
    """0: no limit."""

    @property
    def any(self) -> bool:
        return bool(self.jobs_in_flight or self.submissions_per_second)


IN_FLIGHT_REFUSAL = "this API key has {limit} unfinished jobs, its limit; wait for one to finish"
RATE_REFUSAL = "this API key submitted {limit} jobs this second, its limit"
IN_FLIGHT_BATCH_REFUSAL = (
    "this API key may have {limit} unfinished jobs; {count} more would exceed it: wait for "
    "some to finish, or send fewer at once"
)
RATE_BATCH_REFUSAL = (
    "this API key may submit {limit} jobs a second; {count} more would exceed it this second"
)
BATCH_TOO_LARGE = (
    "this API key may {what}, fewer than the {count} of this batch: send them in batches of "
    "at most {limit}"
)


class QuotaLedger(Protocol):
    async def admit_many(self, owner: str, job_ids: Sequence[str], limits: Limits) -> None:
        """Count the jobs against the owner's quotas, each job once, all or none: over either
        quota, nothing is counted and QuotaExceededError says which."""
        ...

    async def release(self, owner: str, job_id: str) -> None:
        """The job has finished: it no longer counts as in flight."""
        ...

    async def release_many(self, owner: str, job_ids: Sequence[str]) -> None:
        """The jobs were not queued after all: they no longer count as in flight."""
        ...


def refuse(limits: Limits, count: int, in_flight: bool) -> QuotaExceededError:
    """The refusal of `count` jobs over the in-flight quota (`in_flight`) or the rate."""
    limit = limits.jobs_in_flight if in_flight else limits.submissions_per_second
    if count == 1:
        template = IN_FLIGHT_REFUSAL if in_flight else RATE_REFUSAL
    else:
        template = IN_FLIGHT_BATCH_REFUSAL if in_flight else RATE_BATCH_REFUSAL
    quota = "jobs_in_flight" if in_flight else "submissions_per_second"
    return QuotaExceededError(template.format(limit=limit, count=count), 1, quota)


def check_batch_fits(limits: Limits, count: int) -> None:
    """A batch larger than a quota could never be admitted: say so at once."""
    for quota, limit, what in (
        ("jobs_in_flight", limits.jobs_in_flight, f"have {limits.jobs_in_flight} unfinished jobs"),
        (
            "submissions_per_second",
            limits.submissions_per_second,
            f"submit {limits.submissions_per_second} jobs a second",
        ),
    ):
        if limit and count > limit:
            message = BATCH_TOO_LARGE.format(what=what, limit=limit, count=count)
            raise QuotaExceededError(message, 1, quota)
