"""The queue port: where the api puts a job it accepted. Redis (arq) and the embedded
worker are its two backends, in shared/redis_queue.py and worker/embedded.py."""

from typing import Any, Protocol

from shared.catalog import JobType
from shared.records import JobRecord


class JobQueue(Protocol):
    async def enqueue(
        self, job_type: JobType, record: JobRecord, parameters: dict[str, Any]
    ) -> None:
        """Hand the job to whoever runs it; return once it is safely queued."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Take the job off the queue, or stop it where it runs."""
        ...
