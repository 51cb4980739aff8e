"""The local mode's job events: publisher and watchers live in the same process."""

from shared.events.base import LocalFanOut
from shared.records.model import JobRecord


class MemoryJobEvents(LocalFanOut):
    async def publish(self, record: JobRecord, text: str) -> None:
        if self.is_watched(record.id):
            # A copy: the runner goes on changing its record after publishing it.
            self.deliver(record.model_copy(deep=True))

    async def forget(self, job_id: str) -> None:
        self.drop(job_id)
