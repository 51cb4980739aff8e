"""Counting this process's round trips to Redis: each command or pipeline that a redis-py
asyncio connection sends, so that a test can check that an operation costs a fixed number of
them whatever its size (Redis's own INFO commandstats counts every client of the shared Redis,
other tests' too)."""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from redis.asyncio.connection import AbstractConnection

CONNECTION_UPKEEP = frozenset((b"AUTH", b"CLIENT", b"HELLO", b"PING", b"SELECT"))
"""What a connection sends for itself as it opens (or checks its health), not for a caller."""


@contextmanager
def round_trips() -> Iterator[list[bytes]]:
    """The packed commands sent while the context is open, one entry per round trip (a
    pipeline is one); a connection's own upkeep is left out."""
    sent: list[bytes] = []
    send = AbstractConnection.send_packed_command

    async def counted(
        self: AbstractConnection, command: bytes | str | Iterable[bytes], *args: Any, **kw: Any
    ) -> None:
        packed = command.encode() if isinstance(command, str) else command
        packed = packed if isinstance(packed, bytes) else b"".join(packed)
        # `*<count>\r\n$<length>\r\n<first command's name>\r\n...`
        if packed.split(b"\r\n", 3)[2].upper() not in CONNECTION_UPKEEP:
            sent.append(packed)
        await send(self, command, *args, **kw)

    with mock.patch.object(AbstractConnection, "send_packed_command", counted):
        yield sent
