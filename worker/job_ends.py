"""Where a job goes on its queue once an attempt has ended: off it (done), back on it later (a
retry) or at once (a worker that stops puts its running jobs back).

The ends of every job that ended in the same turn of the worker's loop go in one pipeline (one
DEL of all their keys and one ZREM per queue): arq's `finish_job` spent a transaction per job.
"""

from collections import defaultdict
from typing import NamedTuple

import redis.asyncio
from arq.utils import timestamp_ms
from redis.asyncio.client import Pipeline

from shared.grouped_pipeline import GroupedPipeline
from shared.keys import arq_job_key, in_progress_key, retry_key


class End(NamedTuple):
    job_id: str
    queue: str
    due_ms: int | None
    """None: the job is done and leaves its queue; else it is due again then."""


def write_ends(pipe: Pipeline, ends: list[End]) -> None:
    """The lease of each job is let go first: a job put back is due for any worker at once."""
    keys: list[str] = []
    done: defaultdict[str, list[str]] = defaultdict(list)
    again: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for end in ends:
        keys.append(in_progress_key(end.job_id))
        if end.due_ms is None:
            keys += (retry_key(end.job_id), arq_job_key(end.job_id))
            done[end.queue].append(end.job_id)
        else:
            again[end.queue][end.job_id] = end.due_ms
    pipe.delete(*keys)
    for queue, job_ids in done.items():
        pipe.zrem(queue, *job_ids)
    for queue, due in again.items():
        # XX: a job cancelled meanwhile (taken off its queue) is not put back.
        pipe.zadd(queue, due, xx=True)


class JobEnds:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._grouped: GroupedPipeline[End] = GroupedPipeline(client, write_ends)

    async def done(self, job_id: str, queue: str) -> None:
        """The job leaves its queue, with arq's keys of it (envelope, lease, delivery count)."""
        await self._grouped.send(_nothing, End(job_id, queue, None))

    async def again(self, job_id: str, queue: str, delay_ms: int = 0) -> None:
        """The job is due again `delay_ms` from now (any worker may take it then); its delivery
        count is kept."""
        await self._grouped.send(_nothing, End(job_id, queue, timestamp_ms() + delay_ms))


def _nothing(pipe: Pipeline) -> int:
    return 0
