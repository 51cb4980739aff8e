"""The Redis backend of job events: records are published on one pub/sub channel per namespace,
and each api process keeps one subscription that hands them to its local watches."""

import redis.asyncio
from redis.asyncio.client import Pipeline

from shared.connections import calls_redis
from shared.events.base import LocalFanOut
from shared.records.model import JobRecord
from shared.subscriptions import Subscription


class RedisJobEvents(LocalFanOut):
    """Publishes `<job id> <record JSON>`; only a process that watches that id parses it.
    `<job id> ` alone says the job was deleted. One message may carry several, a line each
    (a record's JSON has no raw line break): a worker announces the jobs it ended together
    in one."""

    def __init__(self, client: redis.asyncio.Redis, channel: str) -> None:
        super().__init__()
        self._client = client
        self._channel = channel
        self._subscription = Subscription(client, channel, self._dispatch)

    @calls_redis("publish a job event")
    async def publish(self, record: JobRecord, text: str) -> None:
        await self._client.publish(self._channel, self.message(record, text))

    @calls_redis("announce a deleted job")
    async def forget(self, job_id: str) -> None:
        """Here at once, and in every other api process: `<job id> ` with nothing after it."""
        self.drop(job_id)
        await self._client.publish(self._channel, f"{job_id} ")

    def publish_in(self, pipeline: Pipeline, record: JobRecord, text: str) -> None:
        """Add the announcement to `pipeline`, a pipeline of a client of the same Redis."""
        pipeline.publish(self._channel, self.message(record, text))

    def publish_all_in(self, pipeline: Pipeline, messages: list[str]) -> None:
        """Add one announcement of every `message` (see `message`) to `pipeline`."""
        pipeline.publish(self._channel, "\n".join(messages))

    @staticmethod
    def message(record: JobRecord, text: str) -> str:
        return f"{record.id} {text}"

    @calls_redis("subscribe to job events")
    async def start_listening(self) -> None:
        await self._subscription.start()

    async def close(self) -> None:
        await self._subscription.close()

    def _dispatch(self, data: bytes) -> None:
        """A malformed message raises here, once every other line of it was handed on; the
        subscription logs it and reads on."""
        malformed: Exception | None = None
        for line in data.split(b"\n"):
            try:
                self._dispatch_one(line)
            except Exception as error:  # one bad line must not drop the others' records
                malformed = malformed or error
        if malformed is not None:
            raise malformed

    def _dispatch_one(self, data: bytes) -> None:
        job_id, _, payload = data.partition(b" ")
        decoded_id = job_id.decode("ascii", "replace")
        if not payload:
            self.drop(decoded_id)
        elif self.is_watched(decoded_id):
            self.deliver(JobRecord.model_validate_json(payload))
