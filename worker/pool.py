"""arq's Redis pool for a worker: it waits for work instead of polling for it, and it rides out
a Redis restart instead of letting the worker die.

arq's worker reads its queue with ZRANGEBYSCORE every `poll_delay`. This pool makes that read,
when it finds nothing new, wait for a wake-up that the api publishes on enqueue, naming the job
(or for the fallback period, so a lost wake-up only delays a job), then hand arq the jobs the
wake-ups named, or read again. Idle workers thus cost Redis a couple of commands per fallback
period, and a new job is picked up at once.

Its connections retry every command until Redis answers again (worker/outages.py), where arq
itself exits on the first connection error. (arq's claim, whose WATCH a lost connection would
drop, is replaced by a script: worker/claims.py.)
"""

import asyncio
import logging
from typing import Any

from arq.connections import ArqRedis
from arq.utils import timestamp_ms

from shared.subscriptions import Subscription
from worker.outages import ride_out_outages

logger = logging.getLogger(__name__)


class WorkerPool(ArqRedis):
    def __init__(self, *, queue_name: str, fallback_poll: float, **options: Any) -> None:
        super().__init__(**options)
        ride_out_outages(self.connection_pool)
        self._watched_queue = queue_name
        self._fallback_poll = fallback_poll
        self._wakeup = asyncio.Event()
        self._announced: list[bytes] = []
        """Ids of the jobs whose wake-ups came during the current read of the queue."""
        self._reading = False
        self._subscription: Subscription | None = None
        self._last_read: list[bytes] = []

    async def listen_for_wakeups(self, channel: str) -> None:
        self._subscription = Subscription(self, channel, self._woken)
        await self._subscription.start()

    def _woken(self, job_id: bytes) -> None:
        # Kept only while a read waits: a worker busy with max_jobs jobs reads nothing, and
        # the read it makes once a slot frees finds every job queued meanwhile.
        if job_id and self._reading:
            self._announced.append(job_id)
        self._wakeup.set()

    async def stop_listening(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()

    async def zrangebyscore(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        if name != self._watched_queue or not (self._subscription and self._subscription.active):
            return await super().zrangebyscore(name, *args, **kwargs)
        # Cleared before reading: a wake-up that arrives after the read is not lost, and one
        # that came before is for a job this read finds (the api queues, then announces).
        self._wakeup.clear()
        self._announced.clear()
        self._reading = True
        try:
            return await self._read_or_wait(name, *args, **kwargs)
        finally:
            self._reading = False

    async def _read_or_wait(self, name: Any, *args: Any, **kwargs: Any) -> Any:
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
        if self._announced:
            # The jobs the wake-ups named, without reading the queue again: the claim
            # (worker/claims.py) takes only those still queued and due. Jobs whose wake-ups
            # were lost are found by the read that starts the next call, which also finds
            # nothing new in these (running here or, when another worker won them, there).
            announced, self._announced = self._announced, []
            self._last_read = [*self._last_read, *announced]
            return announced
        # arq computed `max` (now) before the wait; a job queued since has a later score.
        self._last_read = await super().zrangebyscore(
            name, *args, **{**kwargs, "max": timestamp_ms()}
        )
        return self._last_read
