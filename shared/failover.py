"""Following a Sentinel failover at once: every process listens on the Sentinels for
`+switch-master`, and when a master it uses is replaced, it closes its connections to the old
one, so that the next command of each client asks the Sentinels for the new master.

Without this a client would keep its connections to the old master until one of them fails.
After a `SENTINEL FAILOVER` the old master lives on: it takes writes until the Sentinels turn
it into a replica of the new one, up to ten seconds later (their INFO period), and it then
drops what it took meanwhile. Each Sentinel is listened to, so that one that is down does not
make a process miss the switch.
"""

import asyncio
import logging

import redis.asyncio

from shared.connections import sentinel_options
from shared.settings import Settings
from shared.subscriptions import Subscription, subscriptions_on

logger = logging.getLogger(__name__)

SWITCH_MASTER_CHANNEL = "+switch-master"

RECONNECT_SWEEPS = (0.0, 0.1, 0.5, 2.0)
"""Seconds after a switch at which idle connections are closed: a connection busy with a
command at the switch is closed once that command ends and it is idle again (closing it mid-
command breaks redis-py's connection state: the caller would get an AttributeError, not a
connection error)."""


class FailoverWatch:
    """Closes the connections of `pools` to a master the Sentinels replaced."""

    def __init__(self, settings: Settings, pools: list[redis.asyncio.ConnectionPool]) -> None:
        self._settings = settings
        self._pools = pools
        self._sentinels: list[redis.asyncio.Redis] = []
        self._subscriptions: list[Subscription] = []
        self._switches: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for host, port in self._settings.sentinels:
            client = redis.asyncio.Redis(host=host, port=port, **sentinel_options(self._settings))
            self._sentinels.append(client)
            subscription = Subscription(client, SWITCH_MASTER_CHANNEL, self._switched)
            try:
                await subscription.start()
            except (redis.RedisError, OSError) as error:
                # That Sentinel is down: the others carry the news.
                logger.warning("cannot listen to Sentinel %s:%d: %r", host, port, error)
                continue
            self._subscriptions.append(subscription)

    def _switched(self, message: bytes) -> None:
        # `<master name> <old ip> <old port> <new ip> <new port>`
        name, *addresses = message.decode().split()
        pools = [pool for pool in self._pools if getattr(pool, "service_name", None) == name]
        if not pools:
            return
        logger.warning("Sentinel replaced master %r (%s): reconnecting", name, " ".join(addresses))
        task = asyncio.create_task(self._reconnect(pools))
        self._switches.add(task)
        task.add_done_callback(self._switches.discard)

    async def _reconnect(self, pools: list[redis.asyncio.ConnectionPool]) -> None:
        for delay in RECONNECT_SWEEPS:
            await asyncio.sleep(delay)
            for pool in pools:
                # Every connection made from now on asks the Sentinels for the master.
                await pool.disconnect(inuse_connections=False)
            if delay == 0:
                # A subscription holds its connection for good: it moves over now, or it
                # would hear nothing the new master publishes until the old one is demoted.
                for pool in pools:
                    for subscription in subscriptions_on(pool):
                        await subscription.resubscribe()

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        await asyncio.gather(*self._switches, return_exceptions=True)
        for client in self._sentinels:
            await client.aclose()
