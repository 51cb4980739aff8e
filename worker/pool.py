"""arq's Redis pool for a worker: it waits for work instead of polling for it, and it rides out
a Redis restart instead of letting the worker die.

arq's worker reads its queue with ZRANGEBYSCORE every `poll_delay`. This pool makes that read,
when it finds nothing new, wait for a wake-up that the api publishes on enqueue (or for the
fallback period, so a lost wake-up only delays a job), then read again. Idle workers thus cost
Redis a couple of commands per fallback period, and a new job is picked up at once.

Its connections retry every command until Redis answers again. arq itself exits on the first
connection error; the one place where a retry is not enough is a WATCH that the lost
connection dropped, which `RewatchingPipeline` sets up again.
"""

import asyncio
import logging
from typing import Any

import redis
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import WatchError

from shared.subscriptions import Subscription

logger = logging.getLogger(__name__)


def outage_retry_options() -> dict[str, Any]:
    """Connection options that retry a command until Redis answers again, backing off to 2 s
    between tries, so a worker waits out a Redis restart instead of failing its jobs.

    No socket timeout: redis-py reads under a timeout can swallow a task's cancellation
    (redis/redis-py#2551, still seen with 5.3 on Python 3.11), and a worker cancels running
    jobs on SIGTERM and on a client's cancel. TCP keepalive notices a dead peer instead.
    """
    return {
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=-1),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError, ConnectionError],
        "socket_timeout": None,
        "socket_keepalive": True,
    }


class RewatchingPipeline(Pipeline):
    """A pipeline that, when the connection dies after WATCH, watches the same keys again on a
    new connection and goes on, where redis-py would raise WatchError (and arq would exit).

    Changes made while the connection was down are not seen by the new WATCH; for arq's use
    (claiming a job) that can at worst run a job twice, which at-least-once delivery allows.
    """

    _watched: tuple[Any, ...] = ()
    lease_ms: int | None = None
    """When set, the in-progress key of a job being claimed lives this long, not arq's."""

    def psetex(self, name: Any, time_ms: Any, value: Any) -> Any:
        # arq claims a job with an in-progress key that lives for the longest timeout of any
        # job type plus 10 s; set here, the worker's lease (worker/leases.py) is in force from
        # the claim on, without a PEXPIRE of its own.
        if self.lease_ms is not None and str(name).startswith(in_progress_key_prefix):
            time_ms = min(int(time_ms), self.lease_ms)
        return super().psetex(name, time_ms, value)

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] == "WATCH":
            self._watched = args[1:]
        while True:
            try:
                return await super().immediate_execute_command(*args, **options)  # type: ignore[no-untyped-call]
            except WatchError:
                if args[0] == "WATCH" or not self._watched:
                    raise
                logger.warning("connection to Redis lost during a WATCH; watching again")
                self.watching = False
                await super().immediate_execute_command("WATCH", *self._watched)  # type: ignore[no-untyped-call]


class WorkerPool(ArqRedis):
    def __init__(
        self, *, queue_name: str, fallback_poll: float, lease_seconds: float, **options: Any
    ) -> None:
        super().__init__(**options)
        self._lease_ms = int(lease_seconds * 1000)
        self._watched_queue = queue_name
        self._fallback_poll = fallback_poll
        self._wakeup = asyncio.Event()
        self._subscription: Subscription | None = None
        self._last_read: list[bytes] = []

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipeline = RewatchingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipeline.lease_ms = self._lease_ms
        return pipeline

    async def listen_for_wakeups(self, channel: str) -> None:
        self._subscription = Subscription(self, channel, lambda _: self._wakeup.set())
        await self._subscription.start()

    async def stop_listening(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()

    async def zrangebyscore(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        if name != self._watched_queue or not (self._subscription and self._subscription.active):
            return await super().zrangebyscore(name, *args, **kwargs)
        # Cleared before reading: a wake-up that arrives after the read is not lost.
        self._wakeup.clear()
        job_ids = await super().zrangebyscore(name, *args, **kwargs)
        if job_ids and job_ids != self._last_read:
            self._last_read = job_ids
            return job_ids
        # Nothing queued, or only the jobs seen last time, which are running (here or on
        # another worker): nothing new to start until a wake-up or the fallback period.
        try:
            async with asyncio.timeout(self._fallback_poll):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        # arq computed `max` (now) before the wait; a job queued since has a later score.
        self._last_read = await super().zrangebyscore(
            name, *args, **{**kwargs, "max": timestamp_ms()}
        )
        return self._last_read
