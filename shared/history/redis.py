"""The Redis backend of the history, on the queue's Redis (which never evicts): one hash per
minute, `<ns>:{history}:<minute>` (shared/keys.py), whose fields are the counts of its
intervals (`<slot>:finished:<queue>:<type>`, `<slot>:failed:<queue>:<type>`), their samples
of waiting jobs (`<slot>:waiting:<queue>`) and the claim of each sample (`<slot>:sampled-by`),
`<slot>` being the interval's place in its minute.

A worker's heartbeat adds its tally in one pipeline (an HINCRBY per figure it counted, an
EXPIRE per minute touched); a hash lives KEPT_SECONDS after its last write, so the history
stays an hour long without any pruning. Reading the hour is one pipeline of 61 HGETALLs. The
keys share a hash tag, so that on a Redis Cluster every pipeline goes to one node.
"""

import redis.asyncio

from shared.connections import calls_redis
from shared.history.base import (
    INTERVAL_SECONDS,
    KEPT_INTERVALS,
    Counts,
    Figure,
    IntervalFigures,
    WaitingReader,
    current_interval,
    oldest_kept,
)
from shared.keys import Keys

INTERVALS_PER_MINUTE = 60 // INTERVAL_SECONDS
KEPT_SECONDS = KEPT_INTERVALS * INTERVAL_SECONDS + 2 * 60
"""How long a minute's hash lives after its last write: the hour, and the two minutes that a
write for the previous minute may come late by."""


class RedisHistory:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    @calls_redis("add to the history")
    async def add(self, counts: Counts) -> None:
        first = oldest_kept(current_interval())
        touched: set[str] = set()
        async with self._client.pipeline(transaction=False) as pipe:
            for interval, figures in counts.items():
                if interval < first:
                    continue
                key = self._key(interval)
                touched.add(key)
                for figure, count in figures.items():
                    pipe.hincrby(key, count_field(interval, figure), count)
            if not touched:
                return
            for key in touched:
                pipe.expire(key, KEPT_SECONDS)
            await pipe.execute()

    @calls_redis("sample the waiting jobs")
    async def sample_waiting(self, interval: int, sampler: str, read: WaitingReader) -> bool:
        key = self._key(interval)
        slot = interval % INTERVALS_PER_MINUTE
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, f"{slot}:sampled-by", sampler)
            pipe.expire(key, KEPT_SECONDS)
            claimed, _ = await pipe.execute()
        if not claimed:
            return False
        waiting = await read()
        if waiting:
            mapping: dict[str | bytes, int] = {
                f"{slot}:waiting:{queue}": count for queue, count in waiting.items()
            }
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=mapping)
                await pipe.execute()
        return True

    @calls_redis("read the history")
    async def read(self, since: int, until: int) -> list[IntervalFigures]:
        since = max(since, oldest_kept(current_interval()))
        if since > until:
            return []
        minutes = range(since // INTERVALS_PER_MINUTE, until // INTERVALS_PER_MINUTE + 1)
        async with self._client.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hgetall(self._keys.history_minute(minute))
            hashes = await pipe.execute()
        found: dict[int, IntervalFigures] = {}
        for minute, fields in zip(minutes, hashes, strict=True):
            for raw_field, raw_value in fields.items():
                slot, kind, rest = [*raw_field.decode().split(":", 2), ""][:3]
                interval = minute * INTERVALS_PER_MINUTE + int(slot)
                if not since <= interval <= until or kind == "sampled-by":
                    continue
                figures = found.setdefault(interval, IntervalFigures(interval))
                if kind == "waiting":
                    figures.waiting = figures.waiting or {}
                    figures.waiting[rest] = int(raw_value)
                else:
                    queue, name = rest.split(":", 1)
                    figures.counts[Figure(queue, name, failed=kind == "failed")] = int(raw_value)
        return [found[interval] for interval in sorted(found)]

    async def close(self) -> None:
        """Nothing to do: every write is made when it is asked for."""

    def _key(self, interval: int) -> str:
        return self._keys.history_minute(interval // INTERVALS_PER_MINUTE)


def count_field(interval: int, figure: Figure) -> str:
    kind = "failed" if figure.failed else "finished"
    return f"{interval % INTERVALS_PER_MINUTE}:{kind}:{figure.queue}:{figure.name}"
