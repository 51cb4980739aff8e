"""How operators see a worker process: its heartbeat in Redis and its own HTTP endpoint.

The heartbeat announces the worker's status in the overview (shared/overview/) every
HEARTBEAT_SECONDS, for the dashboard and the api's `jobcache_workers_alive`, and adds the jobs
that ended since the last beat to the dashboard's history (shared/history/), sampling the
waiting jobs once per interval: the history costs no Redis command per job. The endpoint
serves the worker's Prometheus metrics (`GET /metrics`) and its health (`GET /health/live`: the
event loop answers; `GET /health/ready`: its last heartbeat reached Redis). It runs in the
worker's event loop, not in a thread, so that an answer also proves the loop is not stuck.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence

from shared.activity import WorkerActivity
from shared.errors import BackendUnavailableError
from shared.history import History
from shared.history.recorder import HistoryRecorder
from shared.metrics import EXPOSITION_CONTENT_TYPE
from shared.overview.base import (
    HEARTBEAT_SECONDS,
    WORKER_STALE_SECONDS,
    Overview,
    waiting_by_queue,
)
from shared.settings import Settings
from worker.endpoint_address import advertised_address

logger = logging.getLogger(__name__)

REQUEST_HEAD_TIMEOUT = 5.0
WITHDRAW_TIMEOUT = 1.0


class Heartbeat:
    """Announces the worker now and every HEARTBEAT_SECONDS, adding to the history with each
    beat; withdraws it when closed."""

    def __init__(
        self,
        overview: Overview,
        activity: WorkerActivity,
        recorder: HistoryRecorder | None = None,
    ) -> None:
        self._overview = overview
        self._activity = activity
        self._recorder = recorder
        self._last_beat: float | None = None
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def seconds_since_beat(self) -> float | None:
        return None if self._last_beat is None else time.monotonic() - self._last_beat

    async def start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._beat_forever(), name="worker-heartbeat")

    async def close(self, withdraw_timeout: float = WITHDRAW_TIMEOUT) -> None:
        """Stop beating and withdraw the worker, giving up after `withdraw_timeout` seconds
        (its entry then goes stale)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._recorder is not None:
            # The jobs that ended since the last beat; the next interval's sample is another's.
            await self._recorder.flush(withdraw_timeout, sample=False)
        with contextlib.suppress(BackendUnavailableError, TimeoutError):
            async with asyncio.timeout(withdraw_timeout):
                await self._overview.withdraw(self._activity.worker_id)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await self._beat()

    async def _beat(self) -> None:
        try:
            async with asyncio.timeout(HEARTBEAT_SECONDS):
                await self._overview.announce(self._activity.status())
        except (BackendUnavailableError, TimeoutError) as error:
            # TimeoutError: this beat's own deadline (the worker's clients wait out outages).
            self._activity.metrics.redis_errors.labels("heartbeat").inc()
            if not self._failing:
                logger.warning("worker heartbeat cannot reach Redis: %r", error)
            self._failing = True
            return
        if self._failing:
            logger.info("worker heartbeat reaches Redis again")
        self._failing = False
        self._last_beat = time.monotonic()
        if self._recorder is not None and not await self._recorder.flush(HEARTBEAT_SECONDS):
            self._activity.metrics.redis_errors.labels("heartbeat").inc()


class WorkerEndpoint:
    """A minimal HTTP/1.1 server for GET /metrics, /health/live and /health/ready."""

    def __init__(self, activity: WorkerActivity, heartbeat: Heartbeat) -> None:
        self._activity = activity
        self._heartbeat = heartbeat
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; return the port (chosen by the system when `port` is 0)."""
        self._server = await asyncio.start_server(self._serve, host or None, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of `path`."""
        if path == "/metrics":
            return 200, EXPOSITION_CONTENT_TYPE, self._activity.metrics.exposition()
        if path == "/health/live":
            return 200, "application/json", b'{"status":"alive"}'
        if path == "/health/ready":
            since = self._heartbeat.seconds_since_beat
            ready = since is not None and since <= WORKER_STALE_SECONDS
            body = {"status": "ready" if ready else "unavailable", "redis": ready}
            return (200 if ready else 503), "application/json", json.dumps(body).encode()
        return 404, "text/plain; charset=utf-8", b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, *_ = [*request_line.split(" "), "", ""]
            if method not in ("GET", "HEAD"):
                status, content_type, body = 405, "text/plain; charset=utf-8", b"GET only\n"
            else:
                status, content_type, body = self.answer(target.split("?", 1)[0])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass  # a client that went away or sent no proper request gets nothing
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Monitoring:
    """The worker's heartbeat and endpoint, started together and closed together."""

    def __init__(self, heartbeat: Heartbeat, endpoint: WorkerEndpoint) -> None:
        self.heartbeat = heartbeat
        self.endpoint = endpoint

    async def close(self, withdraw_timeout: float = WITHDRAW_TIMEOUT) -> None:
        await self.endpoint.close()
        await self.heartbeat.close(withdraw_timeout)


async def start_monitoring(
    settings: Settings,
    overview: Overview,
    activity: WorkerActivity,
    history: History | None = None,
    queues: Sequence[str] = (),
) -> Monitoring:
    """Open the endpoint, then announce the worker (with the endpoint's address). With a
    history, each beat adds to it and samples the waiting jobs of `queues` (every queue of the
    job types, not only those this worker serves)."""
    recorder = None
    if history is not None:

        async def waiting() -> dict[str, int]:
            return await waiting_by_queue(overview, queues)

        recorder = HistoryRecorder(history, activity.tally, activity.worker_id, waiting)
    heartbeat = Heartbeat(overview, activity, recorder)
    endpoint = WorkerEndpoint(activity, heartbeat)
    port = await endpoint.start(settings.worker_metrics_host, settings.worker_metrics_port)
    activity.metrics_address = advertised_address(settings, port)
    logger.info(
        "worker %s: metrics and health at http://%s/metrics",
        activity.worker_id, activity.metrics_address,
        extra={"worker_id": activity.worker_id},
    )  # fmt: skip
    await heartbeat.start()
    return Monitoring(heartbeat, endpoint)
