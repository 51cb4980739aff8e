"""How jobcache names what it stores, so that keys read well in RedisInsight.

Every key lives under the cache namespace: `<namespace>:job:<id>` for job records (cached
responses are named in api/response_cache/keys.py).
"""

import re
import secrets

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")


def new_job_id() -> str:
    """A random id of 128 bits (22 URL-safe characters): unguessable, so it can be shared."""
    return secrets.token_urlsafe(16)


def is_job_id(value: str) -> bool:
    return JOB_ID_PATTERN.fullmatch(value) is not None


def namespaced(namespace: str, key: str) -> str:
    """The one rule joining a namespace and a key, for every cache backend."""
    return f"{namespace}:{key}"


def job_record_key(job_id: str) -> str:
    return f"job:{job_id}"


def job_events_channel(namespace: str) -> str:
    """The pub/sub channel on which every write of a job record is announced."""
    return f"{namespace}:job-events"


def wakeup_channel(queue_name: str) -> str:
    """The pub/sub channel on which the api tells idle workers that a job was queued."""
    return f"{queue_name}:wakeup"


def cancel_channel(queue_name: str) -> str:
    """The pub/sub channel on which the api asks workers to stop a running job."""
    return f"{queue_name}:cancel"
