"""The asyncio client: sends the calls of operations.py with an `httpx.AsyncClient`."""

import asyncio
import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from httpx_sse import EventSource

from jobcache_client import operations
from jobcache_client.base import ClientBase
from jobcache_client.jobs import Job, JobPage, JobStatus, RetriedJobs
from jobcache_client.operations import DEFAULT_MAX_BATCH, Call, EventStream, Listing, Operation

T = TypeVar("T")


class AsyncClient(ClientBase[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """An asyncio client of a jobcache api: `Client`'s methods, to await (and iterate with
    `async for`).

    Use it as an async context manager, or `await close()` it. Constructor: see `ClientBase`.
    """

    def _open_http_client(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport)

    async def close(self) -> None:
        if self._owns_http_client:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def submit(
        self,
        name: str,
        parameters: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        expires_in: float | None = None,
    ) -> Job:
        """Queue a job of type `name`; its record, `queued`. Sent again after a lost answer
        with the same idempotency key (a new one unless given), so it queues one job at most.
        `expires_in`: seconds after which, not started, it ends `expired` instead."""
        return await self._run(
            operations.submit(name, parameters, idempotency_key, callback_url, expires_in)
        )

    async def submit_many(
        self,
        name: str,
        parameters: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        expires_in: float | None = None,
    ) -> builtins.list[Job]:
        """Queue a job of type `name` for each parameter set, `max_batch` to a request; the
        records in the same order. `expires_in`: as for `submit`, for each job."""
        return await self._run(
            operations.submit_many(
                name, parameters, idempotency_key, callback_url, max_batch, expires_in
            )
        )

    async def get(self, job_id: str) -> Job:
        """The job's record now."""
        return await self._run(operations.get(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:  # noqa: ASYNC109
        """The job's record once it has finished; WaitTimeout after `timeout` seconds."""
        return await self._run(operations.wait(job_id, timeout))

    async def events(self, job_id: str) -> AsyncIterator[Job]:
        """The job's record now, then at each change of status or progress until it finishes."""
        stream = EventStream(job_id, self.retry_policy.retries, self.retry_policy.backoff_delay)
        while (call := stream.next_call()) is not None:
            response = await self._send(call)
            try:
                async for event in EventSource(stream.check(response)).aiter_sse():
                    if (job := stream.accept(event)) is not None:
                        yield job
            except httpx.TransportError as error:
                stream.broke(error)
            finally:
                await response.aclose()

    async def list(
        self,
        *,
        status: JobStatus | str | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the caller's jobs, newest first; `cursor` is an earlier page's `next`."""
        return await self._run(operations.list_page(status, name, limit, cursor))

    async def iter_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        name: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Job]:
        """Every one of the caller's jobs, newest first, a page at a time."""
        listing = Listing(status, name, page_size)
        while (call := listing.next_call()) is not None:
            for job in listing.read(await self._send(call)):
                yield job

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; its record, `cancelled`. Conflict if it finished."""
        return await self._run(operations.cancel(job_id))

    async def queues(self) -> builtins.list[dict[str, Any]]:
        """Every queue of the job types: paused or not, its waiting, running and deferred jobs
        and the live workers serving it (an admin key, with API keys set)."""
        return await self._run(operations.queues())

    async def pause_queue(self, name: str) -> dict[str, Any]:
        """Start no new job of the queue until it is resumed (it still takes jobs)."""
        return await self._run(operations.steer_queue(name, "pause"))

    async def resume_queue(self, name: str) -> dict[str, Any]:
        """Start the queue's jobs again."""
        return await self._run(operations.steer_queue(name, "resume"))

    async def retry(self, job_id: str) -> Job:
        """Run a job that ended failed, cancelled or expired again, under the same id; its
        record, `queued` anew (the earlier errors in `previous_errors`). Conflict if it did
        not end so, or is no longer kept (FAILED_JOB_TTL)."""
        return await self._run(operations.retry(job_id))

    async def retry_failed(
        self,
        *,
        queue: str | None = None,
        name: str | None = None,
        since: datetime | None = None,
    ) -> RetriedJobs:
        """Run again every kept failure of a queue or of a job type (of every API key: it
        takes an admin key), only those that ended at or after `since` if given; how many."""
        return await self._run(operations.retry_failed(queue, name, since))

    async def delete(self, job_id: str) -> None:
        """Delete the job's record, cancelling the job first if it has not finished."""
        return await self._run(operations.delete(job_id))

    async def _run(self, operation: Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._send(call))
        except StopIteration as done:
            value: T = done.value
            return value

    async def _send(self, call: Call) -> httpx.Response:
        """The answer to `call`, sent again as the retry policy says. An error answer comes
        back with its body read; a streamed success unread."""
        attempts = self.retry_policy.attempts(call)
        delay: float | None = call.after
        while True:
            if delay:
                await asyncio.sleep(delay)
            request = self._request(call)
            try:
                response = await self._http.send(request, stream=call.stream)
            except httpx.TransportError as error:
                delay = attempts.after_transport_error(error, str(request.url))
                continue
            if response.is_success:
                return response
            await response.aread()
            await response.aclose()
            delay = attempts.after_error_answer(response)
            if delay is None:
                return response
