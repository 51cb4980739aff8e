"""The Redis backend of the job lists: a sorted set per owner on the cache's Redis
(`<ns>:jobs:<owner>`, named in shared/keys.py), job ids scored by their creation time in
microseconds.

The record store writes new entries in the pipeline that writes the records (`add_in`), so
listing a job costs its submission no round trip. The entries past the horizon are dropped,
and the set's expiry pushed back, by the same pipeline, at most every PRUNE_INTERVAL per owner
and process: one command per submission instead of three.
"""

import time
from collections.abc import Sequence

import redis.asyncio
from redis.asyncio.client import Pipeline

from shared.connections import calls_redis
from shared.keys import Keys
from shared.listing.base import Position, microseconds
from shared.records.model import JobRecord

PRUNE_INTERVAL = 10.0
"""Seconds between two prunes of one owner's set by one process; the set expires this much
later than the horizon, so that an entry written meanwhile is not dropped early."""


class RedisJobListing:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys, keep_for: int) -> None:
        """`keep_for`: seconds an entry is kept (shared/listing/base.py's horizon)."""
        self._client = client
        self._keys = keys
        self._keep_for = keep_for
        self._pruned_at: dict[str | None, float] = {}

    @calls_redis("list jobs")
    async def add(self, records: Sequence[JobRecord]) -> None:
        async with self._client.pipeline(transaction=False) as pipeline:
            self.add_in(pipeline, records)
            await pipeline.execute()

    def add_in(self, pipeline: Pipeline, records: Sequence[JobRecord]) -> None:
        """Add the entries to `pipeline`, a pipeline of a client of the cache's Redis, after
        the records' own writes: an entry never names a record not yet written."""
        by_owner: dict[str | None, dict[str, int]] = {}
        for record in records:
            by_owner.setdefault(record.owner, {})[record.id] = microseconds(record)
        now = time.time()
        for owner, entries in by_owner.items():
            key = self._keys.job_list(owner)
            pipeline.zadd(key, entries)
            if now - self._pruned_at.get(owner, 0.0) >= PRUNE_INTERVAL:
                self._pruned_at[owner] = now
                horizon_us = int((now - self._keep_for) * 1_000_000)
                pipeline.zremrangebyscore(key, "-inf", f"({horizon_us}")
                pipeline.expire(key, self._keep_for + int(PRUNE_INTERVAL) + 1)

    @calls_redis("read a list of jobs")
    async def older(self, owner: str | None, than: Position | None, count: int) -> list[Position]:
        key = self._keys.job_list(owner)
        top = "+inf" if than is None else than.created_us
        found: list[Position] = []
        offset = 0
        # The range starts at `than`'s score, `than` included: one entry more is read. One
        # read, then, unless entries created in the same microsecond as `than` and already
        # seen fill it: those are skipped, and as many more read.
        while len(found) < count:
            wanted = count - len(found) + (than is not None)
            entries = await self._client.zrevrangebyscore(
                key, top, "-inf", start=offset, num=wanted, withscores=True
            )
            offset += len(entries)
            for member, score in entries:
                position = Position(int(score), member.decode())
                if than is None or position < than:
                    found.append(position)
            if len(entries) < wanted:
                break
        return found[:count]

    @calls_redis("take jobs off a list")
    async def remove(self, owner: str | None, job_ids: Sequence[str]) -> None:
        if job_ids:
            await self._client.zrem(self._keys.job_list(owner), *job_ids)
