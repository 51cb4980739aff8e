"""Waiting for replicas (REDIS_MIN_REPLICAS_ACK): a write that must outlive the loss of the
master (an accepted job, a job's record as queued or finished) is followed, in the same
pipeline and so on the same connection, by Redis' WAIT, and counts as done only once that many
replicas have it. Replication is asynchronous otherwise: a master that acknowledged a write and
died a moment later may take it with it when Sentinel promotes a replica."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared.errors import BackendUnavailableError
from shared.settings import Settings

logger = logging.getLogger(__name__)

RETRY_FIRST = 0.1
RETRY_CAP = 2.0
"""A write the replicas did not acknowledge is made again after these seconds, doubling."""


class ReplicasBehindError(BackendUnavailableError):
    """Fewer replicas than REDIS_MIN_REPLICAS_ACK acknowledged a write in time: the api
    answers 503, and a worker runs the job again rather than call it finished."""


@dataclass(frozen=True)
class ReplicaAcks:
    replicas: int
    """How many replicas must have the write."""
    timeout: float
    """Seconds the WAIT may take."""

    @classmethod
    def of(cls, settings: Settings) -> "ReplicaAcks | None":
        """The acknowledgements the settings ask for; None when REDIS_MIN_REPLICAS_ACK is 0."""
        if settings.redis_min_replicas_ack <= 0:
            return None
        return cls(settings.redis_min_replicas_ack, settings.redis_replica_ack_timeout)

    def wait_in(self, pipeline: Any) -> None:
        """Queue the WAIT as the pipeline's last command, after the writes it covers."""
        pipeline.execute_command("WAIT", self.replicas, max(1, round(self.timeout * 1000)))

    def check(self, acknowledged: int, what: str) -> None:
        """Raise ReplicasBehindError unless `acknowledged` (WAIT's reply) is enough."""
        if int(acknowledged) < self.replicas:
            raise ReplicasBehindError(
                f"only {int(acknowledged)} of the {self.replicas} replicas that "
                f"REDIS_MIN_REPLICAS_ACK asks for acknowledged {what} within "
                f"{self.timeout:g}s"
            )


async def until_replicated(write: Callable[[], Awaitable[None]], what: str) -> None:
    """Make `write` (which raises ReplicasBehindError when the replicas lag) again until the
    replicas have it: a worker's way with what must not be lost."""
    delay = RETRY_FIRST
    while True:
        try:
            await write()
            return
        except ReplicasBehindError as error:
            logger.warning("%s: %s; writing it again in %.1fs", what, error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_CAP)
