"""The Redis backend of the schedule book, on the queue's Redis (which never evicts, so a claim
cannot vanish before its time), shared by every worker's scheduler.

A claim is one `SET <ns>:schedule:<name>:<due ms> <holder> NX PX <CLAIM_TTL>`: the first
worker's SET of a due time writes the key, every later one finds it there. A job type's last
run is one small JSON string with no TTL; GET /schedules reads all of them with one MGET. The
keys are named in shared/keys.py.
"""

from collections.abc import Sequence
from datetime import datetime

import redis.asyncio

from shared.connections import calls_redis
from shared.keys import Keys
from shared.schedules.base import CLAIM_TTL, LastRun


class RedisScheduleBook:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    @calls_redis("claim a due time of a scheduled job")
    async def claim(self, name: str, due: datetime, holder: str) -> bool:
        claimed = await self._client.set(
            self._keys.schedule_claim(name, due), holder, nx=True, px=int(CLAIM_TTL * 1000)
        )
        return bool(claimed)

    @calls_redis("note the run of a scheduled job")
    async def note_run(self, name: str, due: datetime, job_id: str) -> None:
        last_run = LastRun(job_id=job_id, due_at=due)
        await self._client.set(self._keys.schedule_last_run(name), last_run.model_dump_json())

    @calls_redis("read the last runs of the scheduled jobs")
    async def last_runs(self, names: Sequence[str]) -> dict[str, LastRun | None]:
        if not names:
            return {}
        found = await self._client.mget([self._keys.schedule_last_run(name) for name in names])
        return {
            name: None if raw is None else LastRun.model_validate_json(raw)
            for name, raw in zip(names, found, strict=True)
        }

    async def close(self) -> None:
        """Nothing to close: the client is the queue's, closed by whoever opened it."""
