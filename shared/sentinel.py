"""Redis behind Sentinel: the pools through which every client finds the master, and how a
process follows a failover at once.

Each connection asks the Sentinels for the master as it connects. Every process also listens on
the Sentinels for `+switch-master` (FailoverWatch); when a master it uses is replaced, each of
its connections reconnects at its next use, and its subscriptions subscribe again. Without
this a client would keep its connections to the old master until one of them fails: after a
`SENTINEL FAILOVER` the old master lives on and takes writes until the Sentinels turn it into a
replica of the new one, up to ten seconds later, and it then drops what it took meanwhile.

A connection is never closed from outside while someone may be using it: redis-py's asyncio
connection is not safe for that (a command under way fails with an AttributeError, not a
connection error). Instead the pool carries a generation, which a switch increments, and a
connection of an older generation closes itself the next time it is taken from the pool.
"""

import asyncio
import logging
from typing import Any

import redis.asyncio
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from shared.settings import RedisAddress, Settings
from shared.subscriptions import Subscription, subscriptions_on

logger = logging.getLogger(__name__)

SWITCH_MASTER_CHANNEL = "+switch-master"


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """Client options for the Sentinels themselves."""
    password = settings.redis_sentinel_password
    return {
        "password": password.get_secret_value() if password else None,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.redis_connect_timeout,
    }


class FollowsSwitches:
    """A connection that reconnects, when next taken from its pool, after the master changed."""

    connection_pool: Any
    _generation: int = 0

    async def connect(self) -> None:
        generation: int = getattr(self.connection_pool, "generation", 0)
        if self.is_connected and self._generation != generation:  # type: ignore[attr-defined]
            await self.disconnect()  # type: ignore[attr-defined]
        self._generation = generation
        await super().connect()  # type: ignore[misc]


class FollowingSentinelConnection(FollowsSwitches, SentinelManagedConnection):
    """A connection to the master the Sentinels name, that follows a switch."""


class FollowingSentinelSSLConnection(FollowsSwitches, SentinelManagedSSLConnection):
    """The same over TLS."""


class FollowingSentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, whose connections move to a new master by the generation
    (FollowsSwitches) rather than by redis-py closing its idle connections when one of them
    finds a new master: those may be taken by another task while they close."""

    generation = 0

    async def get_master_address(self) -> tuple[str, int]:
        address: tuple[str, int] = await self.sentinel_manager.discover_master(self.service_name)
        if self.master_address is not None and address != self.master_address:
            self.generation += 1
        self.master_address = address
        return address


def sentinel_pool(
    address: RedisAddress, settings: Settings, **options: Any
) -> redis.asyncio.ConnectionPool:
    """A pool of connections to the master the Sentinels name for `address`; `options` are the
    connections' (an address among them is ignored)."""
    assert address.sentinel_master is not None
    options.pop("host", None)
    options.pop("port", None)
    ssl = options.pop("ssl", False)
    options["connection_class"] = (
        FollowingSentinelSSLConnection if ssl else FollowingSentinelConnection
    )
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(address.sentinels), sentinel_kwargs=sentinel_options(settings)
    )
    pool: redis.asyncio.ConnectionPool = FollowingSentinelPool(  # type: ignore[no-untyped-call]
        address.sentinel_master, sentinels, **options
    )
    return pool


class FailoverWatch:
    """Moves `pools` (and their subscriptions) to the new master when the Sentinels switch."""

    def __init__(self, settings: Settings, pools: list[redis.asyncio.ConnectionPool]) -> None:
        self._settings = settings
        self._pools = pools
        self._sentinels: list[redis.asyncio.Redis] = []
        self._subscriptions: list[Subscription] = []
        self._switches: set[asyncio.Task[None]] = set()
        self._masters: dict[str, str] = {}
        """The new address of each master's last switch: every Sentinel announces it."""
        self._moving = asyncio.Lock()

    async def start(self) -> None:
        # Each Sentinel, so that one that is down does not make this process miss a switch.
        for host, port in self._settings.sentinels:
            client = redis.asyncio.Redis(host=host, port=port, **sentinel_options(self._settings))
            self._sentinels.append(client)
            subscription = Subscription(client, SWITCH_MASTER_CHANNEL, self._switched)
            try:
                await subscription.start()
            except (redis.RedisError, OSError) as error:
                logger.warning("cannot listen to Sentinel %s:%d: %r", host, port, error)
                continue
            self._subscriptions.append(subscription)

    def _switched(self, message: bytes) -> None:
        # `<master name> <old ip> <old port> <new ip> <new port>`, once from each Sentinel.
        name, *addresses = message.decode().split()
        pools = [pool for pool in self._pools if getattr(pool, "service_name", None) == name]
        new_address = " ".join(addresses[2:])
        if not pools or self._masters.get(name) == new_address:
            return
        self._masters[name] = new_address
        logger.warning("Sentinel replaced master %r (%s): reconnecting", name, " ".join(addresses))
        for pool in pools:
            if isinstance(pool, FollowingSentinelPool):
                pool.generation += 1
        task = asyncio.create_task(self._resubscribe(pools))
        self._switches.add(task)
        task.add_done_callback(self._switches.discard)

    async def _resubscribe(self, pools: list[redis.asyncio.ConnectionPool]) -> None:
        # A subscription holds its connection for good: it moves over now, or it would hear
        # nothing the new master publishes until the old one is demoted.
        async with self._moving:  # one move at a time: a subscription is moved once
            for pool in pools:
                for subscription in subscriptions_on(pool):
                    await subscription.resubscribe()

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        await asyncio.gather(*self._switches, return_exceptions=True)
        for client in self._sentinels:
            await client.aclose()
