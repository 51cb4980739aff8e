"""What GET /dashboard/state tells the page, in process and in both modes: the backend's hour of
history by queue and job type (all of it, or from `history_since` on), health, the oldest
waiting job, a queue whose workers are busy with other queues, and each API key's own recent
jobs however many another key submits."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.activity import WorkerActivity, WorkerStatus
from shared.history import INTERVAL_SECONDS, Tally
from shared.overview import busy_elsewhere
from shared.records import JobRecord, utcnow
from tests.conftest import eventually, finished_record, served_for, settings_in

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

ALICE = "alice-key-of-the-dashboard-state-test"
BOB = "bob-key-of-the-dashboard-state-test"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def state_of(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/dashboard/state", params=params)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def hour_totals(state: dict[str, Any], kind: str) -> dict[str, dict[str, int]]:
    """The history's finished and failed jobs summed over its intervals, by queue or type."""
    totals: dict[str, dict[str, int]] = {}
    for interval in state["history"]["intervals"]:
        for name, figures in interval[kind].items():
            total = totals.setdefault(name, {"finished": 0, "failed": 0})
            total["finished"] += figures["finished"]
            total["failed"] += figures["failed"]
    return totals


async def test_the_state_carries_the_hour_a_worker_added_in_either_mode(
    mode: str, namespace: str
) -> None:
    async with served_for(settings_in(mode, namespace)) as (services, client):
        ten_minutes_ago = time.time() - 600
        tally = Tally()
        tally.count("default", "echo", failed=False, at=ten_minutes_ago)
        tally.count("default", "fail", failed=True, at=ten_minutes_ago)
        tally.count("cpu", "primes", failed=False)
        await services.backend.history.add(tally.take())  # as a worker's heartbeat does

        state = await state_of(client)
        history = state["history"]
        assert history["interval_seconds"] == INTERVAL_SECONDS
        since = datetime.fromisoformat(history["since"])
        assert timedelta(minutes=59) < datetime.now(UTC) - since <= timedelta(minutes=60)
        assert [interval["finished"] for interval in history["intervals"]] == [2, 1]
        assert [interval["failed"] for interval in history["intervals"]] == [1, 0]
        assert hour_totals(state, "types") == {
            "echo": {"finished": 1, "failed": 0},
            "fail": {"finished": 1, "failed": 1},
            "primes": {"finished": 1, "failed": 0},
        }
        assert hour_totals(state, "queues") == {
            "default": {"finished": 2, "failed": 1},
            "cpu": {"finished": 1, "failed": 0},
        }
        assert state["health"] == {"api": "up", "redis": None if mode == "local" else True}

        # A page that has the hour asks for what came since: the last interval only.
        recent = datetime.fromtimestamp(time.time() - 1, UTC).isoformat()
        later = await state_of(client, history_since=recent)
        assert [interval["finished"] for interval in later["history"]["intervals"]] == [1]
        naive = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
        halfway = await state_of(client, history_since=naive.isoformat())
        assert [interval["finished"] for interval in halfway["history"]["intervals"]] == [1]


async def test_a_bad_history_since_is_a_422_that_names_it(namespace: str) -> None:
    async with served_for(settings_in("local", namespace)) as (_, client):
        response = await client.get("/dashboard/state", params={"history_since": "an hour ago"})
        assert response.status_code == 422
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["query", "history_since"]
        assert "datetime" in problem["msg"]


async def test_the_embedded_worker_adds_its_jobs_to_the_history(namespace: str) -> None:
    async with served_for(settings_in("local", namespace)) as (_, client):
        for name, parameters in (
            ("echo", {"message": "one"}),
            ("echo", {"message": "two"}),
            ("fail", {"message": "no"}),
        ):
            submitted = await client.post(f"/jobs/{name}", json=parameters)
            assert submitted.status_code == 202, submitted.text
            await finished_record(client, submitted.json()["id"])

        async def recorded() -> dict[str, Any] | None:
            state = await state_of(client)
            return state if hour_totals(state, "types").get("fail") else None

        state = await eventually(recorded, within=10)
        assert hour_totals(state, "types") == {
            "echo": {"finished": 2, "failed": 0},
            "fail": {"finished": 1, "failed": 1},
        }
        sampled = [i for i in state["history"]["intervals"] if i["waiting"] is not None]
        assert sampled, "the embedded worker samples the waiting jobs"
        assert sampled[-1]["queues"]["default"]["waiting"] == 0


async def test_a_queue_whose_workers_are_busy_with_other_queues_says_so(namespace: str) -> None:
    settings = settings_in("local", namespace, worker_concurrency=1)
    async with served_for(settings) as (_, client):
        sleeping = await client.post("/jobs/sleep", json={"seconds": 3})
        assert sleeping.status_code == 202, sleeping.text

        async def running() -> bool:
            return (await state_of(client))["queue"]["running"] == 1

        await eventually(running)
        primes = await client.post("/jobs/primes", json={"limit": 100})
        assert primes.status_code == 202, primes.text

        async def stuck() -> dict[str, Any] | None:
            state = await state_of(client)
            queues = {queue["name"]: queue for queue in state["queues"]}
            waited = queues["cpu"]["oldest_waiting_seconds"]
            return state if waited is not None and waited > 0.3 else None

        state = await eventually(stuck)
        queues = {queue["name"]: queue for queue in state["queues"]}
        cpu = queues["cpu"]
        assert (cpu["waiting"], cpu["running"], cpu["workers"]) == (1, 0, 1)
        assert cpu["busy_elsewhere"] is True
        assert queues["default"]["busy_elsewhere"] is False
        assert queues["default"]["oldest_waiting_seconds"] is None
        assert state["queue"]["oldest_waiting_seconds"] == cpu["oldest_waiting_seconds"]
        assert (await finished_record(client, primes.json()["id"], within=30))["status"] == (
            "succeeded"
        )


def test_a_full_worker_busy_with_the_queues_own_jobs_is_not_busy_elsewhere() -> None:
    def worker(concurrency: int, *queues_running: str) -> WorkerStatus:
        activity = WorkerActivity(concurrency=concurrency, queues=["default", "cpu"])
        for queue in queues_running:
            record = JobRecord(id=f"{queue}-{time.monotonic_ns()}", name="x", attempts=1)
            record.started_at = utcnow()
            activity.started(record, queue)
        return activity.status()

    assert busy_elsewhere("cpu", 1, [worker(1, "default")])
    assert not busy_elsewhere("cpu", 1, [worker(1, "cpu")]), "busy with its own jobs"
    assert not busy_elsewhere("cpu", 1, [worker(2, "default")]), "a slot is free"
    assert not busy_elsewhere("cpu", 0, [worker(1, "default")]), "nothing waits"
    assert not busy_elsewhere("cpu", 1, [worker(1, "default"), worker(1)]), "one worker is free"
    assert not busy_elsewhere("cpu", 1, []), "no worker serves it: that is said otherwise"


@pytest.mark.parametrize("batch", [150])
async def test_each_key_sees_its_own_recent_jobs_however_many_another_key_submits(
    mode: str, namespace: str, batch: int
) -> None:
    settings = settings_in(mode, namespace, api_keys=f"{ALICE},{BOB}")
    async with served_for(settings) as (_, client):
        own = []
        for message in ("first", "second"):
            response = await client.post(
                "/jobs/echo", json={"message": message}, headers=bearer(ALICE)
            )
            assert response.status_code == 202, response.text
            own.append(response.json()["id"])
        theirs = await client.post(
            "/jobs/echo/batch",
            json=[{"message": f"busy {number}"} for number in range(batch)],
            headers=bearer(BOB),
        )
        assert theirs.status_code == 202, theirs.text
        their_ids = {job["id"] for job in theirs.json()["jobs"]}

        assert (await client.get("/dashboard/state")).status_code == 401
        mine = (await client.get("/dashboard/state", headers=bearer(ALICE))).json()
        assert [job["id"] for job in mine["recent"]] == own[::-1]
        listed = (await client.get("/jobs", headers=bearer(ALICE))).json()["jobs"]
        assert [job["id"] for job in listed] == own[::-1], "the same jobs as GET /jobs lists"
        busy = (await client.get("/dashboard/state", headers=bearer(BOB))).json()
        assert len(busy["recent"]) == 50
        assert {job["id"] for job in busy["recent"]} <= their_ids
