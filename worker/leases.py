"""A running job's lease: its in-progress key (who runs it) and its queue score (when it is due
again if its worker dies) are renewed together while it runs, every third of the lease, so the
first renewal lands well within it."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio
from arq.utils import timestamp_ms

from shared.connections import REDIS_FAILURES
from shared.keys import in_progress_key

logger = logging.getLogger(__name__)

RENEW_SCRIPT = """
local holder, lease, lease_end, progress_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for index = 5, #ARGV, 2 do
  local queue, job_id = ARGV[index], ARGV[index + 1]
  local progress = progress_prefix .. job_id
  if redis.call('GET', progress) == holder then
    redis.call('PEXPIRE', progress, lease)
    redis.call('ZADD', queue, 'XX', lease_end, job_id)
  end
end
return 0
"""
"""ARGV: the worker's id, the lease (ms), its new end (ms), arq's in-progress prefix, then each
job's queue key and id. A job whose end took its key away is left as its end wrote it (a
retry's due time, or off its queue)."""


class Leases:
    """Renews the lease of each job this worker runs (worker/claims.py set it)."""

    def __init__(self, client: redis.asyncio.Redis, lease_seconds: float, holder: str) -> None:
        self._script = client.register_script(RENEW_SCRIPT)
        self._lease_ms = int(lease_seconds * 1000)
        self._holder = holder
        self._held: dict[str, str] = {}
        self._renewer: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def hold(self, job_id: str, queue: str) -> AsyncIterator[None]:
        """Renew the lease of the job (on the queue of that key) while the context is open."""
        self._held[job_id] = queue
        try:
            yield
        finally:
            self._held.pop(job_id, None)

    def start(self) -> None:
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(), name="job-leases")

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            if not self._held:
                continue
            held = [value for job_id, queue in self._held.items() for value in (queue, job_id)]
            try:
                await self._script(
                    args=[
                        self._holder,
                        self._lease_ms,
                        timestamp_ms() + self._lease_ms,
                        in_progress_key(""),
                        *held,
                    ]
                )
            except REDIS_FAILURES as error:
                logger.warning("could not renew the leases of running jobs: %r", error)
