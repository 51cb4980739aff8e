"""The baseline of issue 24's HTTP target: a bare FastAPI app answering jobcache's two routes
of one job (POST /jobs/echo, then GET /jobs/{id}?wait=...) with no work behind them.

    uvicorn bench.bare_api:app

No Redis, no queue, no job: the POST validates its body with the same parameter model and
answers 202 with a queued record and its Location; the GET answers 200 with that job's record,
succeeded, its result the POST's message. Both records have the fields and the size of
jobcache's own, so that the client reads and parses as much from either; what is left of the
difference is what jobcache spends on a job.
"""

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Response

from shared.builtin_jobs import EchoParameters
from shared.keys import new_job_id

app = FastAPI(title="bare baseline")
messages: dict[str, tuple[str, str]] = {}
"""The message and creation time of each job submitted and not read yet."""


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def record(job_id: str, created_at: str, message: str | None) -> bytes:
    """A record of jobcache's shape: queued without a message, succeeded with one."""
    finished = message is not None
    moment = now() if finished else None
    fields: dict[str, Any] = {
        "id": job_id,
        "name": "echo",
        "status": "succeeded" if finished else "queued",
        "result": {"message": message} if finished else None,
        "error": None,
        "attempts": 1 if finished else 0,
        "max_attempts": 1,
        "progress": None,
        "created_at": created_at,
        "started_at": moment,
        "finished_at": moment,
        "scheduled_for": None,
        "expires_at": None,
        "previous_errors": [],
        "callback": None,
    }
    return json.dumps(fields, separators=(",", ":")).encode()


@app.post("/jobs/echo", status_code=202)
async def submit_echo(parameters: EchoParameters) -> Response:
    job_id, created_at = new_job_id(), now()
    messages[job_id] = (parameters.message, created_at)
    return Response(
        record(job_id, created_at, None),
        202,
        {"Location": f"/jobs/{job_id}"},
        media_type="application/json",
    )


@app.get("/jobs/{job_id}")
async def get_job(job_id: str, wait: float = 0) -> Response:
    found = messages.pop(job_id, None)
    if found is None:
        return Response(b'{"detail":"Not Found"}', 404, media_type="application/json")
    message, created_at = found
    return Response(record(job_id, created_at, message), media_type="application/json")
