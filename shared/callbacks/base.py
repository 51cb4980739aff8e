"""The outbox of callbacks: a job's callback is put here before the record of the job's end is
written, and stays until it is delivered or given up, so that a process that dies between the
two (or mid-delivery) loses none. Deliverers (worker/deliveries.py) claim due callbacks for a
lease; one whose deliverer died is claimed again when its lease runs out.

A callback waits for its job's end to be complete before it is due: for whoever wrote the end
(a worker's runner, or the api's cancel) to say `ready`, or for the attempt that ran the job to
let go of it (`release`), so that nothing the attempt still writes can overwrite the delivery's
state in the record. The port is here; its backends are shared/callbacks/memory.py (the local
mode) and shared/callbacks/redis.py (on the queue's Redis, which never evicts).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WAIT_RECHECK_MIN = 1.0
WAIT_RECHECK_MAX = 60.0
"""A callback waiting for its job's end is looked at again after a quarter of its age, between
these seconds, in case its `ready` or `release` never comes (the process that would have said
it died)."""


def wait_recheck(age: float) -> float:
    """Seconds until a callback that has waited `age` seconds for its job is looked at again."""
    return min(max(age / 4, WAIT_RECHECK_MIN), WAIT_RECHECK_MAX)


@dataclass(frozen=True)
class ClaimedCallback:
    """A callback claimed by one deliverer, until its lease runs out."""

    job_id: str
    url: str
    attempts: int
    """Attempts made before this claim."""
    first_attempt_at: float | None
    """When the first attempt was made (seconds since the epoch); None before it."""
    token: str
    """This claim's: only its holder may reschedule or settle the callback."""


@dataclass(frozen=True)
class Claims:
    callbacks: list[ClaimedCallback]
    next_due: float | None
    """When the earliest callback left in the outbox is due (seconds since the epoch); None
    when it is empty."""


class CallbackOutbox(Protocol):
    async def schedule(self, job_id: str, url: str) -> None:
        """Put the job's callback in the outbox, waiting for `ready` or `release`, unless one
        is there already. Called before the record of the job's end is written."""
        ...

    async def ready(self, job_id: str) -> None:
        """The api has written the job's end (a cancel): its callback may go."""
        ...

    def hold(self, job_id: str) -> None:
        """An attempt of the job starts in this process: its callback waits until `release`.
        (On Redis, arq's in-progress key of the job holds it, in every process.)"""
        ...

    def release(self, job_id: str) -> None:
        """The attempt that ran the job here has let go of it: its callback may go."""
        ...

    async def claim(self, limit: int, lease: float) -> Claims:
        """At most `limit` callbacks that are due, or ready and no longer held, each now the
        caller's for `lease` seconds."""
        ...

    async def reschedule(self, claimed: ClaimedCallback, due: float, waiting: bool) -> None:
        """Let go of a claim, the callback due again at `due` (seconds since the epoch), with
        the attempts and first attempt `claimed` has now; on `ready` or `release` as well when
        `waiting` (its job had not ended yet)."""
        ...

    async def settle(self, claimed: ClaimedCallback) -> None:
        """Remove the claimed callback: delivered, given up or without a record to send."""
        ...

    async def watch(self, wake: Callable[[], object]) -> None:
        """Call `wake` whenever a callback may have become due before its time (a `ready` or
        `release`, here or, on Redis, an api's), for a deliverer waiting to claim."""
        ...

    async def close(self) -> None: ...
