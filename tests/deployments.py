"""Deployments for end-to-end tests: an api and workers under a namespace of their own on the
shared Redis, the jobs submitted to them, and the clean-up of exactly the keys they created."""

import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.processes import Api, Worker, api, child_environment, wait_for, worker

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
QUEUE_DB = 0
CACHE_DB = 1
ARQ_KEY_PREFIXES = ("arq:job:", "arq:in-progress:", "arq:retry:", "arq:result:")
FINISHED = ("succeeded", "failed", "cancelled", "expired")


@dataclass
class Deployment:
    """One deployment (api and workers) under its own namespace on the shared Redis, and the
    jobs submitted to it."""

    name: str
    logs: Path
    job_ids: list[str] = field(default_factory=list)

    def environment(self, **settings: str) -> dict[str, str]:
        return child_environment(
            {
                "CACHE_BACKEND": "redis",
                "REDIS_HOST": REDIS_HOST,
                "REDIS_PORT": str(REDIS_PORT),
                "CACHE_NAMESPACE": self.name,
                "CPU_WORKERS": "1",
                "LOG_LEVEL": "INFO",
                **settings,
            }
        )

    def submit(self, client: httpx.Client, job_name: str, parameters: dict[str, Any]) -> str:
        response = client.post(f"/jobs/{job_name}", json=parameters)
        assert response.status_code == 202, response.text
        record = response.json()
        self.job_ids.append(record["id"])
        assert record["status"] == "queued"
        assert record["name"] == job_name
        assert response.headers["location"] == f"/jobs/{record['id']}"
        return str(record["id"])


def redis_client(db: int) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, decode_responses=True)


def keys_matching(db: int, pattern: str) -> list[str]:
    client = redis_client(db)
    try:
        return sorted(client.scan_iter(match=pattern, count=1000))
    finally:
        client.close()


def delete_what_deployment_created(deployment: Deployment) -> None:
    for db in (QUEUE_DB, CACHE_DB):
        client = redis_client(db)
        try:
            owned = list(client.scan_iter(match=f"{deployment.name}:*", count=1000))
            if owned:
                client.delete(*owned)
        finally:
            client.close()
    client = redis_client(QUEUE_DB)
    try:
        arq_keys = [prefix + job_id for job_id in deployment.job_ids for prefix in ARQ_KEY_PREFIXES]
        if arq_keys:
            client.delete(*arq_keys)
    finally:
        client.close()


def delete_namespace(namespace: str) -> None:
    """The keys the redis mode created under the namespace, and arq's keys of its jobs."""
    with redis_client(QUEUE_DB) as queue, redis_client(CACHE_DB) as cache:
        job_ids = [
            job_id
            for key in queue.scan_iter(match=f"{namespace}:queue:*")
            for job_id in queue.zrange(key, 0, -1)
        ]
        arq_keys = [prefix + job_id for job_id in job_ids for prefix in ARQ_KEY_PREFIXES]
        for client, keys in (
            (queue, [*queue.scan_iter(match=f"{namespace}:*"), *arq_keys]),
            (cache, list(cache.scan_iter(match=f"{namespace}:*"))),
        ):
            if keys:
                client.delete(*keys)


def get_record(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def wait_finished(client: httpx.Client, job_id: str, timeout: float = 15) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        record = get_record(client, job_id)
        return record if record["status"] in FINISHED else None

    return wait_for(finished, timeout, what=f"job {job_id} finishes")


def started_lines(log: str, job_id: str) -> list[str]:
    return re.findall(rf"job {re.escape(job_id)} \(\w+\) started, attempt \d+", log)


def start_all(stack: ExitStack, deployment: Deployment, workers: int, **settings: str) -> Api:
    """An api and `workers` workers of one deployment, started at the same time."""
    environment = deployment.environment(**settings)
    started: list[Worker] = [
        stack.enter_context(
            worker(
                environment,
                deployment.logs / f"worker-{number}.log",
                name=f"worker-{number}",
                wait_ready=False,
            )
        )
        for number in range(workers)
    ]
    served = stack.enter_context(api(environment, deployment.logs / "api.log"))
    for each in started:
        each.wait_ready()
    return served
