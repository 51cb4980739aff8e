"""A pub/sub channel read in the background that survives a lost connection and a malformed
message; used for job events (api), invalidations of cached responses (api), and wake-ups and
cancels (workers)."""

import asyncio
import logging
import weakref
from collections.abc import Callable

import redis
import redis.asyncio

logger = logging.getLogger(__name__)

# How long one read waits for a message; short, so the loop notices a dead connection.
READ_TIMEOUT_SECONDS = 1.0
RESUBSCRIBE_DELAY_SECONDS = 0.5


_LIVE: "weakref.WeakSet[Subscription]" = weakref.WeakSet()
"""Every started subscription of this process, for `subscriptions_on`."""


def subscriptions_on(pool: redis.asyncio.ConnectionPool) -> list["Subscription"]:
    """The live subscriptions whose connection comes from `pool` (shared/sentinel.py moves
    them to a new master)."""
    return [each for each in _LIVE if each.pool is pool and each.active]


class Subscription:
    """Calls `on_message` with each message's data, in the order they arrive."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        channel: str,
        on_message: Callable[[bytes], None],
        on_reconnected: Callable[[], None] | None = None,
    ) -> None:
        """`on_reconnected`: called once the subscription reads again after it was lost (what
        was published meanwhile is missed: state kept elsewhere is read again then)."""
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_reconnected = on_reconnected
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def pool(self) -> redis.asyncio.ConnectionPool:
        return self._client.connection_pool

    async def start(self) -> None:
        """Subscribe now, so that nothing published after this returns is missed."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._read(pubsub), name=f"subscription {self._channel}")
        _LIVE.add(self)

    async def resubscribe(self) -> None:
        """Subscribe again on a new connection (its server was replaced); what is published
        in between is missed, as when a connection is lost."""
        await self.close()
        try:
            await self.start()
        except (redis.RedisError, OSError) as error:
            logger.warning("could not subscribe to %s again: %r", self._channel, error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _hand_over(self, data: bytes) -> None:
        try:
            self._on_message(data)
        except Exception as error:
            # One bad message (a foreign publisher, a half-upgraded peer) must not end the
            # subscription: everyone listening here would silently stop hearing the channel.
            # Only the error's type is logged: its text may quote the payload.
            logger.warning(
                "ignored a malformed message on %s (%d bytes): %s",
                self._channel, len(data), type(error).__name__,
            )  # fmt: skip

    async def _read(self, pubsub: redis.asyncio.client.PubSub) -> None:
        lost = False
        try:
            while True:
                try:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=READ_TIMEOUT_SECONDS
                    )
                except (redis.RedisError, OSError) as error:
                    # redis-py subscribes again when it reconnects on the next read.
                    logger.warning("subscription to %s lost (%r)", self._channel, error)
                    lost = True
                    await asyncio.sleep(RESUBSCRIBE_DELAY_SECONDS)
                    continue
                if lost:
                    lost = False
                    if self._on_reconnected is not None:
                        self._on_reconnected()
                if message is not None:
                    self._hand_over(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
