"""arq's Redis pool, taught to wait for work instead of polling for it.

arq's worker reads its queue with ZRANGEBYSCORE every `poll_delay`. This pool makes that read,
when it finds nothing, wait for a wake-up that the api publishes on enqueue (or for the
fallback period, so a lost wake-up only delays a job), then read again. Idle workers thus cost
Redis a couple of commands per fallback period, and a new job is picked up at once.
"""

import asyncio
from typing import Any

from arq.connections import ArqRedis
from arq.utils import timestamp_ms

from shared.subscriptions import Subscription


class WakeablePool(ArqRedis):
    def __init__(self, *, queue_name: str, fallback_poll: float, **options: Any) -> None:
        super().__init__(**options)
        self._watched_queue = queue_name
        self._fallback_poll = fallback_poll
        self._wakeup = asyncio.Event()
        self._subscription: Subscription | None = None
        self._last_read: list[bytes] = []

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
