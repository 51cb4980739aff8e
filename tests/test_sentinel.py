"""Redis Sentinel as a user sees it: real api and worker processes that find the master through
three Sentinels, lose no accepted job when the master fails over or is killed, follow the new
master without a restart, and refuse at startup a Sentinel setting that cannot work."""

import asyncio
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.sentinel

from tests.processes import (
    api,
    api_command,
    child_environment,
    free_port,
    run_until_exit,
    wait_for,
    worker,
    worker_command,
)
from tests.sentinel import (
    DOWN_AFTER_MILLISECONDS,
    FAILOVER_TIMEOUT_MILLISECONDS,
    Address,
    SentinelSetup,
    role_of,
    sentinel_setup,
)

pytestmark = pytest.mark.processes

logger = logging.getLogger(__name__)

FINISHED = ("succeeded", "failed", "cancelled")
FAILS_FAST_SECONDS = 10.0
PROMOTION_TIMEOUT = (DOWN_AFTER_MILLISECONDS + 2 * FAILOVER_TIMEOUT_MILLISECONDS) / 1000 + 10
"""A killed master looks down to the Sentinels after DOWN_AFTER_MILLISECONDS, and a replica is
promoted a second or two later; should their first vote split, the next failover is tried
after twice the failover-timeout."""
REJOIN_TIMEOUT = 40.0
"""A killed master restarted as a replica of the new one copies the whole data set (the
master waits 5 s for more replicas before it streams it), and the Sentinels see it as a
connected replica once they ask the master for its INFO (every 10 s): this bounds the wait
for both."""

RecordProperty = Callable[[str, object], None]


def sentinel_mode(setup: SentinelSetup, **settings: str) -> dict[str, str]:
    """The environment of an api or worker that finds its Redis through the setup's
    Sentinels, in a namespace of its own."""
    return child_environment(
        {
            "CACHE_BACKEND": "redis",
            "CACHE_NAMESPACE": f"test-sentinel-{uuid.uuid4().hex[:12]}",
            "CPU_WORKERS": "1",
            **setup.settings,
            **settings,
        }
    )


def get_record(client: httpx.Client, job_id: str, **params: float) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}", params=params)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def submit(client: httpx.Client, job_name: str, parameters: dict[str, Any]) -> str:
    response = client.post(f"/jobs/{job_name}", json=parameters)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_finished(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        record = get_record(client, job_id)
        return record if record["status"] in FINISHED else None

    return wait_for(finished, timeout, interval=0.05, what=f"job {job_id} finishes")


# --- The harness itself, with redis-py only ------------------------------------------------


@pytest.mark.parametrize("disruption", ["failover", "sigkill"])
def test_the_harness_fails_over(disruption: str) -> None:
    """What the tests below rely on: the replica is promoted, a client that asks the Sentinels
    writes to it and finds what the old master had, and a killed master that is started again
    comes back as a replica of the new one."""
    with sentinel_setup() as setup:
        old_master, replica = setup.servers
        assert setup.master_address() == (old_master.host, old_master.port)
        written = old_master.client()
        try:
            written.set("written-before", "kept")
        finally:
            written.close()
        setup.wait_replicated()

        if disruption == "failover":
            setup.failover()
        else:
            killed = setup.kill_master()
            assert killed is old_master
        new = setup.wait_for_new_master((old_master.host, old_master.port), PROMOTION_TIMEOUT)
        assert new == (replica.host, replica.port)

        sentinels = redis.sentinel.Sentinel(
            [(each.host, each.port) for each in setup.sentinels], socket_timeout=2
        )
        master = sentinels.master_for(
            setup.master_name, password=setup.password, decode_responses=True
        )
        try:
            assert master.get("written-before") == "kept"
            assert master.set("written-after", "taken")
        finally:
            master.close()

        if disruption == "sigkill":
            setup.restart(old_master)
            setup.wait_settled(REJOIN_TIMEOUT)
            assert role_of(old_master)[:3] == ["slave", *new]
            rejoined = old_master.client()
            try:
                assert rejoined.get("written-after") == "taken"
            finally:
                rejoined.close()


# --- Settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("process", ["api", "worker"])
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"REDIS_SENTINELS": "nohost", "REDIS_SENTINEL_MASTER": "jobcache"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINEL_MASTER"),
    ],
    ids=["sentinel-without-port", "no-master-name"],
)
def test_sentinel_settings_that_cannot_work_stop_the_process_naming_the_setting(
    process: str, settings: dict[str, str], named: str, tmp_path: Path
) -> None:
    secret = f"never-shown-{secrets.token_hex(8)}"
    environment = child_environment(
        {
            "CACHE_BACKEND": "redis",
            "CACHE_NAMESPACE": f"test-sentinel-{uuid.uuid4().hex[:12]}",
            "REDIS_PASSWORD": secret,
            **settings,
        }
    )
    command = api_command(free_port()) if process == "api" else worker_command()

    exited = run_until_exit(process, command, environment, tmp_path / "out.log")

    assert exited.code != 0, exited.output
    assert exited.seconds < FAILS_FAST_SECONDS
    assert named in exited.output
    assert secret not in exited.output


# --- Failover under load -------------------------------------------------------------------

JOBS = 1000
DISRUPT_AT = 250
"""The disruption comes when a quarter of the jobs have been submitted."""
SUBMISSION_SECONDS = {2: 20.0, 1: 30.0}
"""How long the submissions go on, by the number of replicas: long after the disruption, so
that the api is seen accepting jobs again. A killed master is replaced DOWN_AFTER_MILLISECONDS
and a second or two after its death. With one replica, the new master then has none (and
every WAIT fails) until the old master, restarted as its replica, has copied the whole data
set, 5 to 10 s later. With two, the other replica follows the new master at once."""
CONCURRENCY = 16
REQUEST_TIMEOUT = 10.0
RECORDS_TIMEOUT = 45.0


@dataclass(frozen=True)
class Submission:
    """One POST /jobs/echo and its answer; `status` None: no answer (a transport error)."""

    number: int
    sent_at: float
    answered_at: float
    status: int | None
    job_id: str | None = None
    retry_after: str | None = None
    error: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == 202


@dataclass(frozen=True)
class Disruption:
    """When the master was failed over or killed (time.monotonic()), and when every Sentinel
    reported its successor."""

    began: float
    promoted: float
    old: Address
    new: Address


def disrupt(setup: SentinelSetup, how: str) -> Disruption:
    """SENTINEL FAILOVER, or SIGKILL of the master and, once a replica is promoted, a restart
    of the killed server (as an operator or a supervisor does), so that it rejoins."""
    old = setup.master_address()
    began = time.monotonic()
    if how == "failover":
        setup.failover()
        new = setup.wait_for_new_master(old, PROMOTION_TIMEOUT)
    else:
        killed = setup.kill_master()
        new = setup.wait_for_new_master(old, PROMOTION_TIMEOUT)
        setup.restart(killed)
    return Disruption(began, time.monotonic(), old, new)


async def submit_echo(
    client: httpx.AsyncClient, number: int, slots: asyncio.Semaphore
) -> Submission:
    async with slots:
        sent_at = time.monotonic()
        try:
            response = await client.post("/jobs/echo", json={"message": str(number)})
        except httpx.TransportError as error:
            return Submission(number, sent_at, time.monotonic(), None, error=repr(error))
        answered_at = time.monotonic()
    job_id = response.json().get("id") if response.status_code == 202 else None
    return Submission(
        number,
        sent_at,
        answered_at,
        response.status_code,
        job_id,
        response.headers.get("retry-after"),
        "" if response.status_code == 202 else response.text[:200],
    )


async def submit_through_disruption(
    url: str, seconds: float, disruption: Callable[[], Disruption]
) -> tuple[list[Submission], Disruption]:
    """Submit JOBS echo jobs at a steady pace over `seconds`, at most CONCURRENCY at once,
    without retrying; run `disruption` in a thread when the DISRUPT_AT-th is due."""
    interval = seconds / JOBS
    slots = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits) as client:
        started = time.monotonic()
        submissions: list[asyncio.Task[Submission]] = []
        disrupted: asyncio.Task[Disruption] | None = None
        for number in range(JOBS):
            # The pace of a steady stream of clients, not a wait for a condition.
            await asyncio.sleep(max(0.0, started + number * interval - time.monotonic()))
            if number == DISRUPT_AT:
                disrupted = asyncio.create_task(asyncio.to_thread(disruption))
            submissions.append(asyncio.create_task(submit_echo(client, number, slots)))
        answered = await asyncio.gather(*submissions)
        assert disrupted is not None
        return list(answered), await disrupted


async def final_records(url: str, job_ids: list[str], deadline: float) -> dict[str, Any]:
    """Each job's finished record, or its status code when the api does not know it (a 404: a
    lost record); jobs still unfinished at `deadline` (time.monotonic()) are left out."""
    found: dict[str, Any] = {}
    slots = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT) as client:

        async def look(job_id: str) -> None:
            async with slots:
                response = await client.get(f"/jobs/{job_id}")
            if response.status_code == 404:
                found[job_id] = 404
            elif response.status_code == 200 and response.json()["status"] in FINISHED:
                found[job_id] = response.json()

        while time.monotonic() < deadline:
            pending = [job_id for job_id in job_ids if job_id not in found]
            if not pending:
                break
            await asyncio.gather(*(look(job_id) for job_id in pending))
            await asyncio.sleep(0.2)
    return found


def longest_unavailability(submissions: list[Submission]) -> float:
    """The longest time during which every answer (in the order they came) was a refusal or
    no answer: from the first such request's start to the last such answer."""
    longest, run_began = 0.0, None
    for submission in sorted(submissions, key=lambda each: each.answered_at):
        if submission.accepted:
            run_began = None
            continue
        if run_began is None or submission.sent_at < run_began:
            run_began = submission.sent_at
        longest = max(longest, submission.answered_at - run_began)
    return longest


def first_accepted_again(submissions: list[Submission], began: float) -> Submission | None:
    """The first job submitted after the disruption began that was accepted once the api had
    begun refusing jobs (just after a SENTINEL FAILOVER the old master may still take a few)."""
    after = [each for each in submissions if each.sent_at >= began]
    refusing_from = min((each.sent_at for each in after if not each.accepted), default=began)
    return min(
        (each for each in after if each.accepted and each.sent_at >= refusing_from),
        key=lambda each: each.sent_at,
        default=None,
    )


def describe(submission: Submission, record: Any, disruption: Disruption) -> str:
    """An accepted job that did not succeed, with when it was sent relative to the disruption."""
    sent = submission.sent_at - disruption.began
    promoted = disruption.promoted - disruption.began
    outcome = (
        "record lost"
        if record == 404
        else f"{record['status']}: {record.get('error') or record.get('result')}"
    )
    return f"job {submission.number} sent at {sent:+.3f}s (promoted at {promoted:.3f}s): {outcome}"


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("how", "replicas", "acks"),
    [
        ("failover", 1, 1),
        ("sigkill", 1, 1),
        ("sigkill", 2, 1),
        # A planned failover leaves the old master up: a replica still following it could
        # acknowledge writes the promoted one never gets, so every replica must acknowledge.
        ("failover", 2, 2),
    ],
    ids=[
        "failover-one-replica",
        "sigkill-one-replica",
        "sigkill-two-replicas",
        "failover-two-replicas",
    ],
)
def test_a_failover_loses_no_accepted_job(
    how: str,
    replicas: int,
    acks: int,
    tmp_path: Path,
    record_property: RecordProperty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 202 is a promise: with REDIS_MIN_REPLICAS_ACK an accepted job survives a SENTINEL
    FAILOVER (the old master still up) or the master's death, and the api accepts jobs again
    once the new master has a replica, without a restart of any jobcache process. The figures
    (how long the api refused jobs, how soon it took them again) are recorded as properties
    of the test and logged."""
    # The figures below, not a line per request.
    caplog.set_level(logging.INFO, logger=__name__)
    caplog.set_level(logging.WARNING, logger="httpx")
    with sentinel_setup(replicas=replicas) as setup, ExitStack() as stack:
        environment = sentinel_mode(setup, REDIS_MIN_REPLICAS_ACK=str(acks))
        workers = [
            stack.enter_context(
                worker(environment, tmp_path / f"{name}.log", name=name, wait_ready=False)
            )
            for name in ("worker-1", "worker-2")
        ]
        served = stack.enter_context(api(environment, tmp_path / "api.log"))
        for started in workers:
            started.wait_ready()

        submissions, disruption = asyncio.run(
            submit_through_disruption(
                served.url, SUBMISSION_SECONDS[replicas], lambda: disrupt(setup, how)
            )
        )
        # Read the records once the old master has rejoined as a replica and copied the new
        # master's data: what a client reads then is what survived.
        setup.wait_settled(REJOIN_TIMEOUT)
        accepted = [each for each in submissions if each.accepted]
        records = asyncio.run(
            final_records(
                served.url,
                [str(each.job_id) for each in accepted],
                time.monotonic() + RECORDS_TIMEOUT,
            )
        )

    refused = [each for each in submissions if each.status is not None and not each.accepted]
    unanswered = [each for each in submissions if each.status is None]
    after_promotion = [each for each in accepted if each.sent_at >= disruption.promoted]
    resumed = first_accepted_again(submissions, disruption.began)
    figures = {
        "accepted": len(accepted),
        "refused": len(refused),
        "unanswered": len(unanswered),
        "promotion_seconds": round(disruption.promoted - disruption.began, 3),
        "longest_unavailable_seconds": round(longest_unavailability(submissions), 3),
        "resumed_after_seconds": (
            None if resumed is None else round(resumed.answered_at - disruption.began, 3)
        ),
        "slowest_answer_seconds": round(
            max(each.answered_at - each.sent_at for each in submissions), 3
        ),
    }
    for name, value in figures.items():
        record_property(name, value)
    transport_errors = sorted({each.error for each in unanswered})
    logger.info(
        "%s with %d replicas, %d acks: %s; transport errors: %s",
        how, replicas, acks, figures, transport_errors,
    )  # fmt: skip

    assert disruption.new != disruption.old
    # Every problem at once: each says something different about what went wrong.
    problems: list[str] = []
    if not after_promotion:
        problems.append("no job was accepted after the new master was promoted")
    problems += [
        f"job {each.number} sent at {each.sent_at - disruption.began:+.3f}s was answered "
        f"{each.status} (Retry-After: {each.retry_after}), not 503 with a Retry-After: "
        f"{each.error}"
        for each in refused
        if each.status != 503 or not each.retry_after
    ]
    job_ids = [str(each.job_id) for each in accepted]
    if len(set(job_ids)) != len(accepted):
        problems.append("a job id was given twice")
    problems += [
        describe(each, records[str(each.job_id)], disruption)
        for each in accepted
        if str(each.job_id) in records and not succeeded_with(records[str(each.job_id)], each)
    ]
    problems += [f"job {job_id} never finished" for job_id in job_ids if job_id not in records]
    assert not problems, (
        f"{len(problems)} problems: {problems[:5]} ... {problems[-5:]}; {figures}; transport "
        f"errors: {transport_errors}"
    )
    succeeded = {job_id for job_id in job_ids if records[job_id]["status"] == "succeeded"}
    assert len(succeeded) == len(accepted)


def succeeded_with(record: Any, submission: Submission) -> bool:
    """Whether the job's record says it succeeded with the result its submission asked for."""
    return bool(
        record != 404
        and record["status"] == "succeeded"
        and record["result"] == {"message": str(submission.number)}
    )


# --- Subscriptions -------------------------------------------------------------------------

SLEEP_SECONDS = 3.0
PICKED_UP_WITHIN = 2.0


def test_subscriptions_follow_the_new_master(tmp_path: Path) -> None:
    """A client waiting on a job across a failover hears of its end, and an idle worker hears
    of a job queued after it; both jobs' records are on the new master, so they are still
    there once the old master has rejoined as a replica and copied the new one's data. The
    workers look at the queue by themselves only every minute here: a job picked up at once
    was announced by a wake-up."""
    with sentinel_setup() as setup, ExitStack() as stack:
        environment = sentinel_mode(setup, WORKER_FALLBACK_POLL="60")
        running_worker = stack.enter_context(
            worker(environment, tmp_path / "worker.log", wait_ready=False)
        )
        served = stack.enter_context(api(environment, tmp_path / "api.log"))
        running_worker.wait_ready()
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=10))

        sleeping = submit(client, "sleep", {"seconds": SLEEP_SECONDS})
        submitted_at = time.monotonic()
        wait_for(
            lambda: get_record(client, sleeping)["status"] == "running",
            PICKED_UP_WITHIN,
            what="the worker starts the sleep job (its wake-up arrived)",
        )
        answers: list[dict[str, Any]] = []
        answered_at: list[float] = []

        def wait_on_the_job() -> None:
            with httpx.Client(base_url=served.url, timeout=40) as waiting:
                answers.append(get_record(waiting, sleeping, wait=30))
                answered_at.append(time.monotonic())

        waiter = threading.Thread(target=wait_on_the_job, daemon=True)
        waiter.start()
        setup.wait_replicated()
        old = setup.failover()
        setup.wait_for_new_master(old, PROMOTION_TIMEOUT)

        waiter.join(40)
        assert answers, "GET /jobs/{id}?wait=30 did not answer"
        [answer] = answers
        assert answer["status"] == "succeeded", answer
        waited = answered_at[0] - submitted_at
        # Without the job's event the wait would end only after its 30 s.
        assert waited < SLEEP_SECONDS + 10, f"the waiting client heard after {waited:.1f}s"

        echoed = submit(client, "echo", {"message": "after the failover"})
        record = wait_finished(client, echoed, PICKED_UP_WITHIN + 3)
        assert record["status"] == "succeeded", record
        assert record["started_at"] is not None
        started_at, created_at = (
            datetime.fromisoformat(record[name]) for name in ("started_at", "created_at")
        )
        queued_for = (started_at - created_at).total_seconds()
        assert queued_for < PICKED_UP_WITHIN, f"the idle worker took it after {queued_for:.1f}s"

        setup.wait_settled(REJOIN_TIMEOUT)
        for job_id in (sleeping, echoed):
            assert get_record(client, job_id)["status"] == "succeeded", job_id


# --- A Sentinel that asks for a password ---------------------------------------------------


def test_sentinels_that_ask_for_a_password_are_given_redis_sentinel_password(
    tmp_path: Path,
) -> None:
    sentinel_password = f"sentinel-{secrets.token_hex(8)}"
    with sentinel_setup(sentinel_password=sentinel_password) as setup, ExitStack() as stack:
        environment = sentinel_mode(setup)
        assert environment["REDIS_SENTINEL_PASSWORD"] == sentinel_password
        started = stack.enter_context(worker(environment, tmp_path / "worker.log"))
        served = stack.enter_context(api(environment, tmp_path / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=10))
        job_id = submit(client, "echo", {"message": "through a guarded Sentinel"})
        record = wait_finished(client, job_id, 15)
        assert record["status"] == "succeeded", record
    for output in (started.output(), served.output()):
        assert sentinel_password not in output
        assert setup.password not in output
