"""Writes the records of one attempt in order, holding back its `running` record a moment.

Most jobs finish within milliseconds; writing `running` for them costs two Redis commands and
a round trip that no client can act on (Celery, for the same reason, reports STARTED only on
request). So the `running` record is written only if the job is still running after
RUNNING_RECORD_DELAY; any later write (progress, retry, the final record) first cancels it or,
if it has begun, waits for it, so that writes never land out of order.

Each write replaces the job's record only if it still exists: a client may delete the job
(DELETE /jobs/{id}) while it runs, and what the attempt writes after that must not bring the
record back.
"""

import asyncio

from shared.records import JobRecord, RecordStore

RUNNING_RECORD_DELAY = 0.005


class AttemptRecords:
    def __init__(self, records: RecordStore) -> None:
        self._records = records
        self._timer: asyncio.TimerHandle | None = None
        self._write: asyncio.Task[None] | None = None

    def announce_running(self, record: JobRecord, ttl: int) -> None:
        """Write `record` (as it is then) after the delay, unless another write comes first."""

        def begin() -> None:
            self._write = asyncio.ensure_future(self._records.put(record, ttl, replace_only=True))

        self._timer = asyncio.get_running_loop().call_later(RUNNING_RECORD_DELAY, begin)

    async def put(self, record: JobRecord, ttl: int) -> None:
        await self.settle()
        await self._records.put(record, ttl, replace_only=True)

    async def settle(self) -> None:
        """Drop the held-back write if it has not begun; let it land if it has."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._write is not None:
            write, self._write = self._write, None
            await asyncio.shield(write)
