"""Short leases on running jobs, so that a job whose worker died runs again within seconds.

arq marks a running job with an in-progress key that lives for the longest timeout of any job
type plus 10 s; only when it expires may another worker take the job. A worker here claims a
job with that key set to its lease instead (worker/pool.py) and renews it while the job runs:
a dead worker stops renewing, and its jobs are free again once their lease runs out.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

logger = logging.getLogger(__name__)


class Leases:
    def __init__(self, pool: ArqRedis, lease_seconds: float) -> None:
        self._pool = pool
        self._lease_ms = int(lease_seconds * 1000)
        self._held: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def hold(self, job_id: str) -> AsyncIterator[None]:
        """Renew the job's lease while the context is open (arq deletes the key when done).
        Renewals come every third of the lease, so the first lands well within it."""
        self._held.add(job_id)
        try:
            yield
        finally:
            self._held.discard(job_id)

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew(), name="job-leases")

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            if not self._held:
                continue
            try:
                async with self._pool.pipeline(transaction=False) as pipe:
                    for job_id in self._held:
                        pipe.pexpire(in_progress_key_prefix + job_id, self._lease_ms)
                    await pipe.execute()
            except redis.RedisError as error:
                logger.warning("could not renew the leases of running jobs: %r", error)
