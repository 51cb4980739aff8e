"""A minimal HTTP/1.1 keep-alive client for JSON requests to the api on loopback.

The benchmark's client shares the machine with the api, workers and Redis it measures, so its
own CPU is taken from them. httpx spends about as much CPU per request as the api spends
serving it (0.8 ms here), and several times more with 100 connections in one pool; this client
spends about a tenth of that, so the figures are the service's and not the client's.
"""

import asyncio
import json
import time
from typing import Any

IDLE_REUSE_SECONDS = 2.0
"""An idle connection older than this is replaced: uvicorn closes them after 5 s."""


class HttpError(RuntimeError):
    pass


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    def is_fresh(self) -> bool:
        return (
            time.monotonic() - self.last_used < IDLE_REUSE_SECONDS
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()


class LoopbackHttp:
    """Up to `max_connections` requests at once, each on a kept-alive connection."""

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self._host = host
        self._port = port
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[Connection] = []

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path, None)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body)

    async def request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """The status and the decoded JSON body of the answer."""
        async with self._slots:
            connection = await self._connection()
            try:
                status, keep_alive, payload = await self._exchange(connection, method, path, body)
            except BaseException:
                connection.close()
                raise
            if keep_alive:
                connection.last_used = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
        return status, json.loads(payload) if payload else None

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _connection(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.is_fresh():
                return connection
            connection.close()
        return Connection(*await asyncio.open_connection(self._host, self._port))

    async def _exchange(
        self, connection: Connection, method: str, path: str, body: Any
    ) -> tuple[int, bool, bytes]:
        content = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(content)}\r\n\r\n"
        connection.writer.write(head.encode("ascii") + content)
        status_line = await connection.reader.readline()
        parts = status_line.split(maxsplit=2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP answer to {method} {path}: {status_line!r}")
        headers: dict[bytes, bytes] = {}
        while (line := await connection.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" not in headers:
            raise HttpError(f"{method} {path}: an answer without Content-Length is not supported")
        payload = await connection.reader.readexactly(int(headers[b"content-length"]))
        keep_alive = headers.get(b"connection", b"").lower() != b"close"
        return int(parts[1]), keep_alive, payload
