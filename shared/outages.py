"""How a worker's Redis clients ride out a Redis restart: every command waits until Redis
answers again, where arq (and redis-py by default) would raise on the first connection error.

redis-py retries a command under its connection's retry policy, but it connects outside that
retry: the pool connects a connection before handing it over, and the handshake that follows
the TCP connect (CLIENT SETINFO, SELECT) is retried nowhere (redis/redis-py#1789). A Redis
that is shutting down still completes TCP connects in its listen backlog, then resets them
unanswered; a worker that opened a connection in that moment would get the error raised into
its job's final record write, or into arq's own step, and the job would end with its record
still saying `queued`. The connections here retry the whole connect, handshake included.

The connections also look the host's name up themselves: uvloop's create_connection looks it
up in a future of its own that a cancel (the connect's timeout, a stopping worker) leaves
behind, and when the lookup then fails (a compose service whose container is stopped no longer
resolves) its error was reported as never retrieved, once per connect given up.

shared/backend.py applies it to every Redis client of a worker process (the api's clients
fail fast instead, so that a request answers 503 rather than hang).
"""

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.backoff import ExponentialBackoff

from shared.sentinel import (
    FollowingSentinelConnection,
    FollowingSentinelSSLConnection,
    FollowsSwitches,
)


class _RetriedConnect(AbstractConnection):
    host: str
    port: int
    _address: str | None = None
    """While connecting: the address of the host being tried."""

    async def connect(self) -> None:
        # The pool calls connect() before every command: a connected one returns at once.
        if self.is_connected:
            return
        await self.retry.call_with_retry(super().connect, self._connect_failed)

    async def _connect_failed(self, error: BaseException) -> None:
        await self.disconnect()

    async def _connect(self) -> None:
        """Connect to each address of the host in turn, as create_connection does, having
        looked them up here, where a cancel cancels the lookup too."""
        addresses = await self._addresses()
        failure: OSError | None = None
        try:
            for address in addresses:
                self._address = address
                try:
                    await super()._connect()  # type: ignore[safe-super,no-untyped-call]
                except OSError as error:
                    failure = error
                else:
                    return
        finally:
            self._address = None
        raise failure or OSError(f"no address found for {self.host}")

    async def _addresses(self) -> list[str]:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            return [self.host]
        async with asyncio.timeout(self.socket_connect_timeout):
            found = await asyncio.get_running_loop().getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM
            )
        return list(dict.fromkeys(_address_of(family, sockaddr) for family, *_, sockaddr in found))

    def _connection_arguments(self) -> Mapping[str, Any]:
        arguments = dict(super()._connection_arguments())  # type: ignore[misc]
        if self._address is not None:
            if arguments.get("ssl"):
                arguments["server_hostname"] = arguments["host"]  # what the certificate names
            arguments["host"] = self._address
        return arguments


def _address_of(family: int, sockaddr: tuple[Any, ...]) -> str:
    """The address of a getaddrinfo result as a host to connect to (with an IPv6 scope)."""
    if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
        return f"{sockaddr[0]}%{sockaddr[3]}"
    return str(sockaddr[0])


class OutageRetryingConnection(_RetriedConnect, redis.asyncio.Connection):
    """A TCP connection whose connect, handshake included, retries under its policy."""


class OutageRetryingSSLConnection(_RetriedConnect, redis.asyncio.SSLConnection):
    """The same over TLS."""


# FollowsSwitches first: a connection of a replaced master must not count as connected.
class OutageRetryingSentinelConnection(FollowsSwitches, _RetriedConnect, SentinelManagedConnection):
    """A connection to the master the Sentinels name, asked again at each connect: it waits
    out a failover as it waits out a restart."""


class OutageRetryingSentinelSSLConnection(
    FollowsSwitches, _RetriedConnect, SentinelManagedSSLConnection
):
    """The same over TLS."""


# A peer that vanished without closing the connection (a lost host, a partition) is noticed
# after about 25 s of silence (10 s, then three probes 5 s apart), not the system's default
# of over two hours.
KEEPALIVE_OPTIONS = {
    option: seconds
    for name, seconds in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}

_RETRYING_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {
    redis.asyncio.Connection: OutageRetryingConnection,
    redis.asyncio.SSLConnection: OutageRetryingSSLConnection,
    FollowingSentinelConnection: OutageRetryingSentinelConnection,
    FollowingSentinelSSLConnection: OutageRetryingSentinelSSLConnection,
}


def ride_out_outages(pool: redis.asyncio.ConnectionPool) -> None:
    """Make every connection `pool` opens from now on wait out a Redis outage: it retries each
    command, and its own connect, until Redis answers again, backing off to 2 s between tries.
    Called on the pool of each client a worker builds (arq's, the cache's, the events'), before
    its first connection.

    No socket timeout: redis-py reads under a timeout can swallow a task's cancellation
    (redis/redis-py#2551, still seen with 5.3 on Python 3.11), and a worker cancels running
    jobs on SIGTERM and on a client's cancel. TCP keepalive notices a dead peer instead.
    """
    try:
        pool.connection_class = _RETRYING_CLASSES[pool.connection_class]
    except KeyError:
        raise TypeError(
            "a worker's Redis connections are TCP or TLS, direct or through Sentinel, not "
            f"{pool.connection_class.__name__}"
        ) from None
    pool.connection_kwargs.update(
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=-1),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, ConnectionError],
        socket_timeout=None,
        socket_keepalive=True,
        socket_keepalive_options=KEEPALIVE_OPTIONS,
    )
