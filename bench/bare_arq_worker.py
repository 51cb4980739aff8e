"""A plain arq worker with one `echo` function: the bare-arq baseline that bench/jobs.py
compares jobcache with.

`arq bench.bare_arq_worker.DefaultSettings` runs it with arq's defaults and
`arq bench.bare_arq_worker.TunedSettings` with `poll_delay=0.005, max_jobs=100`. The Redis port
and the queue come from BENCH_REDIS_PORT and BENCH_ARQ_QUEUE, read when arq builds the worker,
not on import.
"""

import os
from collections.abc import ItemsView
from typing import Any

from arq.connections import RedisSettings

REDIS_PORT_VARIABLE = "BENCH_REDIS_PORT"
QUEUE_VARIABLE = "BENCH_ARQ_QUEUE"
TUNED_OPTIONS: dict[str, Any] = {"poll_delay": 0.005, "max_jobs": 100}


async def echo(ctx: dict[str, Any], message: str) -> str:
    return message


class _BareWorkerSettings(dict[str, Any]):
    """arq reads a worker's options from this mapping when it builds the worker."""

    def __init__(self, tuning: dict[str, Any]) -> None:
        super().__init__()
        self._tuning = tuning

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        options: dict[str, Any] = {
            "functions": [echo],
            "redis_settings": RedisSettings(
                host="127.0.0.1", port=int(os.environ[REDIS_PORT_VARIABLE])
            ),
            "queue_name": os.environ[QUEUE_VARIABLE],
            **self._tuning,
        }
        return options.items()


DefaultSettings = _BareWorkerSettings({})
TunedSettings = _BareWorkerSettings(TUNED_OPTIONS)
