"""Writes that many tasks make at about the same time go to Redis together, one round trip for
all of them: a worker ending 40 jobs in one turn of its event loop writes their records in one
pipeline, and takes them off their queues in another, where each job would otherwise cost a
round trip (and a socket write, the largest part of a worker's CPU per job).

A group is sent at the end of the loop turn in which its first write came, or, while the last
group is still on its way, as soon as that one is answered (group commit): a lone write waits
for nothing, and a busy process sends fewer, larger pipelines.
"""

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis.asyncio
from redis.asyncio.client import Pipeline

Note = TypeVar("Note")


class GroupedPipeline(Generic[Note]):
    """`send` adds a write's commands to the group being gathered and waits for their replies.

    `close_group`, if given, adds commands after every write of a group, from the notes the
    writes were sent with (for instance one PUBLISH announcing every record of the group)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        close_group: Callable[[Pipeline, list[Note]], None] | None = None,
    ) -> None:
        self._client = client
        self._close_group = close_group
        self._gathering: list[tuple[Callable[[Pipeline], int], Note | None, asyncio.Future[Any]]]
        self._gathering = []
        self._scheduled = False
        self._sending: asyncio.Task[None] | None = None

    async def send(self, add: Callable[[Pipeline], int], note: Note | None = None) -> list[Any]:
        """Add commands with `add` (which says how many it added) to the next group; their
        replies, once the group has been answered. A command's error is raised here, and an
        error of the whole pipeline (a lost connection) or of `close_group`'s commands in
        every write of the group."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._gathering.append((add, note, future))
        if not self._scheduled and self._sending is None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_sending)
        replies = await future
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _start_sending(self) -> None:
        self._scheduled = False
        if self._gathering and self._sending is None:
            self._sending = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        try:
            while self._gathering:
                group, self._gathering = self._gathering, []
                await self._send_group(group)
        finally:
            self._sending = None

    async def _send_group(
        self, group: list[tuple[Callable[[Pipeline], int], Note | None, asyncio.Future[Any]]]
    ) -> None:
        group = [entry for entry in group if not entry[2].done()]  # a caller gave up
        if not group:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                counts = [add(pipe) for add, _, _ in group]
                if self._close_group is not None:
                    notes = [note for _, note, _ in group if note is not None]
                    if notes:
                        self._close_group(pipe, notes)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as error:
            for _, _, future in group:
                if future.done():
                    continue
                if isinstance(error, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        closing_error = next(
            (reply for reply in replies[sum(counts) :] if isinstance(reply, Exception)), None
        )
        start = 0
        for count, (_, _, future) in zip(counts, group, strict=True):
            if future.done():
                pass
            elif closing_error is not None:
                future.set_exception(closing_error)
            else:
                future.set_result(replies[start : start + count])
            start += count
