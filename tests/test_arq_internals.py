"""What the worker relies on of arq's internals (worker/arq_internals.py): the installed arq has
it, a worker refuses to start without it, and an idle worker reads its queue only now and then."""

import time
from pathlib import Path
from typing import Any

import arq.worker
import pytest
import redis
from arq.worker import func

from shared.catalog import load_catalog
from tests.processes import child_environment, redis_server, wait_for, worker
from worker.arq_internals import ClaimingWorker, QueueWaitingRedis, check_arq_internals

FALLBACK_POLL_SECONDS = 0.5
IDLE_SECONDS = 3.0


async def echo(ctx: dict[str, Any], message: str) -> str:
    return message


@pytest.fixture
def claiming_worker(pool: QueueWaitingRedis) -> ClaimingWorker:
    """A worker built as worker/main.py builds one, never run: building it does no I/O."""
    return ClaimingWorker(
        worker_id="worker-a", lease_seconds=5, functions=[func(echo, name="echo")],
        redis_pool=pool, queue_name=pool.default_queue_name, poll_delay=0.001, keep_result=0,
        handle_signals=False,
    )  # fmt: skip


async def test_the_installed_arq_has_every_internal_the_worker_relies_on(
    claiming_worker: ClaimingWorker,
) -> None:
    """ClaimingWorker checks as it is built; building one is what a worker's start does."""
    assert claiming_worker.worker_id == "worker-a"
    check_arq_internals(claiming_worker)


async def test_a_worker_missing_an_attribute_arq_used_to_have_refuses_to_start(
    claiming_worker: ClaimingWorker,
) -> None:
    del claiming_worker.job_counter

    with pytest.raises(RuntimeError, match=r"\bjob_counter\b"):
        check_arq_internals(claiming_worker)


async def test_an_arq_whose_loop_turns_another_way_is_refused(
    claiming_worker: ClaimingWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were arq's loop to stop calling `_poll_iteration`, which ClaimingWorker replaces with
    its claim, the worker would never take a job."""

    async def main_without_poll_iteration(self: arq.worker.Worker) -> None:
        await self.start_jobs([])

    monkeypatch.setattr(arq.worker.Worker, "main", main_without_poll_iteration)

    with pytest.raises(RuntimeError, match=r"Worker\.main") as raised:
        check_arq_internals(claiming_worker)
    assert "_poll_iteration" in str(raised.value)
    assert "Worker.run" not in str(raised.value), "only what is missing is named"


def queue_reads(client: redis.Redis) -> int:
    """How many ZRANGEBYSCORE commands the server has run since it started."""
    stats: dict[str, Any] = client.info("commandstats")
    calls: int = stats.get("cmdstat_zrangebyscore", {}).get("calls", 0)
    return calls


@pytest.mark.processes
def test_an_idle_worker_reads_its_queue_only_at_its_fallback_poll(
    namespace: str, tmp_path: Path
) -> None:
    with redis_server() as server:
        client = server.client()
        try:
            environment = child_environment(
                {
                    **server.settings,
                    "CACHE_BACKEND": "redis",
                    "CACHE_NAMESPACE": namespace,
                    "CPU_WORKERS": "1",
                    "WORKER_FALLBACK_POLL": str(FALLBACK_POLL_SECONDS),
                }
            )
            with worker(environment, tmp_path / "worker.log") as started:
                # Settled: arq's loop has begun reading the queue (after "worker ready").
                wait_for(lambda: queue_reads(client), 10, what="the worker reads its queue")
                before, since = queue_reads(client), time.monotonic()
                time.sleep(IDLE_SECONDS)  # the idle interval under measurement
                reads, seconds = queue_reads(client) - before, time.monotonic() - since
                assert started.process.poll() is None, "the worker exited while idle"
        finally:
            client.close()
    # About two reads of each queue it serves (the built-in types' default and cpu queues, one
    # ZRANGEBYSCORE each, in one round trip) per fallback period: the read that finds nothing,
    # then the one after the wait. Without the wait for a wake-up, arq would read every
    # poll_delay (1 ms): about 3,000 reads of each queue in these 3 s.
    queues = len(load_catalog(["shared.builtin_jobs"]).queues)
    assert queues == 2
    allowed = queues * (2 * seconds / FALLBACK_POLL_SECONDS + 4)
    assert reads <= allowed, f"{reads} reads of {queues} queues in {seconds:.1f}s idle"
