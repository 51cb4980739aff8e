"""What adds a process's tally to the history and samples the waiting jobs, once per heartbeat:
the worker's heartbeat (worker/monitoring.py) calls it, and the local mode's embedded worker
(worker/embedded.py) runs it on its own loop."""

import asyncio
import logging

from shared.errors import BackendUnavailableError
from shared.history.base import History, WaitingReader, current_interval
from shared.history.tally import Tally

logger = logging.getLogger(__name__)


class HistoryRecorder:
    def __init__(
        self, history: History, tally: Tally, sampler: str, waiting: WaitingReader
    ) -> None:
        """`sampler`: who samples (a worker's id); `waiting`: reads the jobs waiting by queue."""
        self._history = history
        self._tally = tally
        self._sampler = sampler
        self._waiting = waiting
        self._tried_interval: int | None = None
        self._failing = False

    async def flush(self, within: float, *, sample: bool = True) -> bool:
        """Add what was counted since the last flush, and (with `sample`) sample the waiting
        jobs if this interval has no sample yet; whether it all reached the store within
        `within` seconds. What could not be added goes with the next flush."""
        counts = self._tally.take()
        try:
            async with asyncio.timeout(within):
                if counts:
                    await self._history.add(counts)
                    counts = {}
                interval = current_interval()
                if sample and interval != self._tried_interval:
                    await self._history.sample_waiting(interval, self._sampler, self._waiting)
                    self._tried_interval = interval
        except (BackendUnavailableError, TimeoutError) as error:
            self._tally.give_back(counts)
            if not self._failing:
                logger.warning("the dashboard's history cannot be written: %r", error)
            self._failing = True
            return False
        if self._failing:
            logger.info("the dashboard's history is written again")
        self._failing = False
        return True

    async def keep_flushing(self, every: float) -> None:
        """Flush every `every` seconds until cancelled (the local mode, which has no
        heartbeat)."""
        while True:
            await asyncio.sleep(every)
            await self.flush(every)
