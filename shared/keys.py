"""Every key and channel jobcache writes, in one place, so that a RedisInsight user or an
operator can read here what each one holds and how long it lives (`<ns>` is CACHE_NAMESPACE).

On the cache's Redis (REDIS_CACHE_DB, or the server that CACHE_REDIS_* names):
- `<ns>:job:<id>`, string: a job's record as JSON. Kept CACHE_TTL (or the job type's result
  TTL) after the job finished; a day while the job may still run.
- `<ns>:job-events`, channel: `<id> <record JSON>` on every announced write of a record.
- `<ns>:in-flight:<owner>`, sorted set: an API key's unfinished job ids, scored by when each
  stops counting; gone a day after its newest job at the latest.
- `<ns>:rate:<owner>`, string: an API key's submissions this second; lives 1 s.
- `<ns>:jobs:<owner>`, sorted set: the ids of the jobs an API key submitted (`<ns>:jobs:open`:
  those submitted without a key, and the scheduled runs), scored by their `created_at` in
  microseconds; GET /jobs pages through it (shared/listing/). Written with the records, in the
  same round trip; members older than the longest a record can live (a day waiting to start,
  the longest run the catalog allows, then a day or the longest result TTL, whichever is
  longer) are dropped as it is written (at most every 10 s per process), ids whose records
  have expired as a page reads them, and a deleted job's at once; the set expires that long
  (and 10 s) after its last write.
- `<ns>:idempotency:<owner>:<sha256 of the Idempotency-Key>`, string: JSON of the job ids a
  request with that key made and a digest of the request (shared/idempotency/); lives 24 h.
  `<owner>` is `open` for requests without an API key. The key itself is never stored.
- `<ns>:response:<namespace>:<path digest>:<variant digest>`, string: a cached response;
  lives its endpoint's TTL (CACHE_TTL by default).
- `<ns>:response-lock:<namespace>:...`, string: the fill lock of one response; lives
  RESPONSE_CACHE_LOCK_SECONDS at most.
- `<ns>:response-epoch:<namespace>`, string: a counter bumped by every invalidation; no TTL
  (one small key per response-cache namespace).
- `<ns>:response-invalidations`, channel: the key prefix of each invalidation.

On the queue's Redis (REDIS_QUEUE_DB; it must never evict):
- `<ns>:queue:<queue>`, sorted set: one queue of arq's (`default`, or a job type's own
  `@job(queue=...)`), job ids scored by when they are due (ms), a running job by the end of
  its worker's lease (worker/claims.py), so that it is due again if its worker dies; no TTL.
- `arq:job:<id>`, string: arq's envelope of a queued job, JSON (shared/queue/redis.py);
  expires a day after it was queued if no worker ran it.
- `arq:in-progress:<id>`, string: the id of the worker running the job; lives WORKER_LEASE,
  renewed while the job runs.
- `jobcache:claim-receipt:<worker id>`, string: the token and the jobs of the worker's last
  claim, as JSON, so that a claim whose reply was lost and is sent again answers the same;
  lives WORKER_LEASE.
- `arq:retry:<id>`, string: arq's count of the job's deliveries; arq's TTL (a day).
- `<ns>:queue:<queue>:health-check`, string: arq's worker health line (of a worker's first
  queue); lives an hour.
- `<ns>:queue:<queue>:wakeup`, channel: the id of each job queued there (nothing, for a batch:
  read the queue), for idle workers that serve that queue; `!paused` or `!resumed` when the
  queue is paused or resumed.
- `<ns>:paused-queues`, set: the names of the paused queues; no TTL (an operator resumes
  them).
- `<ns>:cancel`, channel: the id of each job a client cancelled, for its worker.
- `<ns>:workers`, sorted set: live worker ids, scored by their last heartbeat; no TTL, stale
  members dropped by every heartbeat.
- `<ns>:worker:<worker id>`, string: one worker's status as JSON; lives 3 heartbeats (6 s).
- `<ns>:{history}:<minute>`, hash: the dashboard's history of one minute (minutes since the
  epoch): per 10-s interval of it (`<slot>`, 0 to 5), jobs finished and failed by queue and job
  type (`<slot>:finished:<queue>:<type>`, `<slot>:failed:<queue>:<type>`), jobs waiting by
  queue (`<slot>:waiting:<queue>`) and which worker sampled them (`<slot>:sampled-by`)
  (shared/history/redis.py); lives 62 minutes after its last write, so about 63 exist. The
  `{history}` hash tag puts them in one slot of a Redis Cluster: reading the hour is one
  pipeline to one node.
- `<ns>:schedule:<name>:<due ms>`, string: the id of the worker that claimed this due time
  of a scheduled job type (shared/schedules/redis.py), so that it runs once; lives 120 s
  (CLAIM_TTL).
- `<ns>:schedule:<name>:last-run`, string: the scheduled job type's last run as JSON (job id
  and due time); no TTL (one small key per scheduled job type).
- `<ns>:callbacks`, sorted set: the outbox of callbacks (shared/callbacks/redis.py), job ids
  scored by when their callback is next due (ms): an attempt's retry, a claim's lease running
  out, or a recheck of one waiting for its job's end; no TTL, a member leaves when its
  callback is delivered or given up.
- `<ns>:callback:<id>`, hash: one callback in the outbox: `url`, `attempts`,
  `first_attempt_ms`, `lease` (the token of the claim delivering it, or empty), `waiting` (1
  while it waits for its job's end to be written) and `scheduled_ms`; no TTL, deleted with its
  member of `<ns>:callbacks` (within WEBHOOK_RETRY_FOR of its first attempt).
- `<ns>:failed:{<queue>}`, sorted set: the kept failures of one queue (jobs that ended
  failed, cancelled or expired; shared/failures/redis.py), job ids scored by when they ended
  (ms); `<ns>:failed:{<queue>}:type:<name>`, sorted set: the same of one job type of it. Both
  trimmed of entries older than FAILED_JOB_TTL as each failure is kept, and expire
  FAILED_JOB_TTL after the last one; a job run again (POST /jobs/{id}/retry) leaves them.
- `<ns>:failed:{<queue>}:job:<id>`, string: one kept failure as it was queued (JSON of the
  QueuedJob: its parameters, owner, callback), so that it can be run again; lives
  FAILED_JOB_TTL, deleted when it is run again. The `{<queue>}` hash tag keeps a queue's
  failures in one slot of a Redis Cluster: keeping one and taking one back are one MULTI.
- `<ns>:callbacks:ready`, channel: the id of each job whose callback the api made ready (a
  cancel), for the workers' deliverers.

The `arq:` keys are arq's own names (arq.constants), shared by every namespace; job ids are
random, so deployments never collide on them.
"""

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)

JOB_ID = r"[A-Za-z0-9_-]{22}"
"""What a job id is: 22 URL-safe characters (a job type's name never has 22: shared/jobs.py)."""
JOB_ID_PATTERN = re.compile(f"^{JOB_ID}$")
OPEN_OWNER = "open"
"""Stands for the owner of jobs submitted without an API key in the names of per-owner keys
(an owner is otherwise a key's hex digest, so the two never meet)."""


def new_job_id() -> str:
    """A random id of 128 bits (22 URL-safe characters): unguessable, so it can be shared."""
    return secrets.token_urlsafe(16)


def is_job_id(value: str) -> bool:
    return JOB_ID_PATTERN.fullmatch(value) is not None


def namespaced(namespace: str, key: str) -> str:
    """The one rule joining a namespace and a key, for every cache backend."""
    return f"{namespace}:{key}"


def job_record_key(job_id: str) -> str:
    """A record's key below the cache's namespace (aiocache adds `<ns>:`)."""
    return f"job:{job_id}"


def arq_job_key(job_id: str) -> str:
    return job_key_prefix + job_id


def in_progress_key(job_id: str) -> str:
    return in_progress_key_prefix + job_id


def retry_key(job_id: str) -> str:
    return retry_key_prefix + job_id


def claim_receipt_key(worker_id: str) -> str:
    """What a worker's last claim took (worker/claims.py), so that the same claim sent again
    answers the same; worker ids are unique across deployments."""
    return f"jobcache:claim-receipt:{worker_id}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Keys:
    """The names of one deployment, under its CACHE_NAMESPACE."""

    namespace: str

    def queue(self, queue: str) -> str:
        """One of arq's queues (a sorted set); namespaced so that two deployments on one Redis
        stay apart."""
        return f"{self.namespace}:queue:{queue}"

    def queue_health_check(self, queue: str) -> str:
        return self.queue(queue) + health_check_key_suffix

    def wakeup_channel(self, queue: str) -> str:
        """On which the api tells the idle workers of a queue that a job was queued there, or
        that the queue was paused or resumed."""
        return f"{self.queue(queue)}:wakeup"

    @property
    def paused_queues(self) -> str:
        """The names of the paused queues (POST /queues/{name}/pause)."""
        return f"{self.namespace}:paused-queues"

    @property
    def cancel_channel(self) -> str:
        """On which the api asks workers to stop a running job."""
        return f"{self.namespace}:cancel"

    @property
    def job_events_channel(self) -> str:
        """On which every announced write of a job record is published."""
        return f"{self.namespace}:job-events"

    def job_record(self, job_id: str) -> str:
        return namespaced(self.namespace, job_record_key(job_id))

    @property
    def workers(self) -> str:
        return f"{self.namespace}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.namespace}:worker:{worker_id}"

    def history_minute(self, minute: int) -> str:
        """The history of one minute (since the epoch); all of them share the `{history}` hash
        tag, being read together."""
        return f"{self.namespace}:{{history}}:{minute}"

    def in_flight(self, owner: str) -> str:
        return f"{self.namespace}:in-flight:{owner}"

    def submission_rate(self, owner: str) -> str:
        return f"{self.namespace}:rate:{owner}"

    def job_list(self, owner: str | None) -> str:
        """The ids of one owner's jobs, by creation time (an API key's digest; None: open)."""
        return f"{self.namespace}:jobs:{owner or OPEN_OWNER}"

    def idempotency(self, owner: str | None, key_digest: str) -> str:
        """What a request with an Idempotency-Key made, by the key's digest, per owner so
        that the keys of different callers never collide."""
        return f"{self.namespace}:idempotency:{owner or OPEN_OWNER}:{key_digest}"

    def schedule_claim(self, name: str, due: datetime) -> str:
        """The claim of one due time of a scheduled job type, by its time in ms."""
        return f"{self.namespace}:schedule:{name}:{round(due.timestamp() * 1000)}"

    def schedule_last_run(self, name: str) -> str:
        return f"{self.namespace}:schedule:{name}:last-run"

    @property
    def callbacks(self) -> str:
        """The outbox of callbacks: job ids by when their callback is due (ms)."""
        return f"{self.namespace}:callbacks"

    def callback(self, job_id: str) -> str:
        """One callback of the outbox (a hash); `callback("")` is the prefix of them all."""
        return f"{self.namespace}:callback:{job_id}"

    def failed_jobs(self, queue: str) -> str:
        """The kept failures of one queue, by end time; `{queue}` is their hash tag."""
        return f"{self.namespace}:failed:{{{queue}}}"

    def failed_jobs_of_type(self, queue: str, name: str) -> str:
        """The kept failures of one job type (of `queue`, its job type's), by end time."""
        return f"{self.failed_jobs(queue)}:type:{name}"

    def failed_job(self, queue: str, job_id: str) -> str:
        """One kept failure as it was queued, in its queue's slot."""
        return f"{self.failed_jobs(queue)}:job:{job_id}"

    @property
    def callbacks_ready_channel(self) -> str:
        """On which the api tells the workers' deliverers that a callback may go now."""
        return f"{self.namespace}:callbacks:ready"


@dataclass(frozen=True)
class ResponseKeys:
    """The response cache's names. A response lives at
    `<root>:response:<namespace>:<sha256 of path>:<sha256 of the variant>` (root is
    CACHE_NAMESPACE): key length and characters never depend on what a client sends, and one
    SCAN pattern reaches every response of a namespace, or of one path in it, and nothing else."""

    root: str

    @property
    def channel(self) -> str:
        """The pub/sub channel on which invalidations reach every api process."""
        return f"{self.root}:response-invalidations"

    def namespace_prefix(self, namespace: str) -> str:
        return f"{self.root}:response:{namespace}:"

    def path_prefix(self, namespace: str, path: str) -> str:
        return f"{self.root}:response:{namespace}:{digest(path)}:"

    def response(self, namespace: str, path: str, variant_text: str) -> str:
        return f"{self.root}:response:{namespace}:{digest(path)}:{digest(variant_text)}"

    def lock(self, key: str) -> str:
        """The fill lock of one response; outside the namespace's SCAN pattern."""
        return f"{self.root}:response-lock:{key.removeprefix(self.root + ':response:')}"

    def epoch(self, namespace: str) -> str:
        """A counter bumped by every invalidation in the namespace, so that a fill that
        started before an invalidation cannot store what it computed after it."""
        return f"{self.root}:response-epoch:{namespace}"
