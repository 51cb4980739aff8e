"""Who may see what, and what bad input leaves behind, with a real api, worker and Redis."""

import subprocess
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from tests.deployments import (
    CACHE_DB,
    QUEUE_DB,
    Deployment,
    keys_matching,
    redis_client,
    start_all,
)
from tests.processes import (
    api,
    api_command,
    child_environment,
    free_port,
    redis_server,
    run_until_exit,
    worker,
)

pytestmark = pytest.mark.processes

ALICE = "alice-5b0e2c0d7a1f4e3b9c8d7e6f5a4b3c2d"
BOB = "bob-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"
JSON = {"Content-Type": "application/json"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_another_keys_job_is_as_unknown_as_a_missing_one(deployment: Deployment) -> None:
    with ExitStack() as stack:
        served = start_all(
            stack, deployment, workers=1, API_KEYS=f"{ALICE},{BOB}", QUOTA_JOBS_IN_FLIGHT="1"
        )
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        assert client.post("/jobs/echo", json={"message": "x"}).status_code == 401

        first = client.post("/jobs/echo", json={"message": "a"}, headers=bearer(ALICE)).json()
        deployment.job_ids.append(first["id"])
        done = client.get(f"/jobs/{first['id']}", params={"wait": 10}, headers=bearer(ALICE))
        assert done.json()["result"] == {"message": "a"}
        stolen = client.get(f"/jobs/{first['id']}", headers=bearer(BOB))
        assert stolen.status_code == 404
        assert "no job with id" in stolen.json()["detail"]

        # The worker released the finished job from ALICE's quota of one job in flight.
        slow = client.post("/jobs/sleep", json={"seconds": 2}, headers=bearer(ALICE))
        assert slow.status_code == 202
        deployment.job_ids.append(slow.json()["id"])
        refused = client.post("/jobs/echo", json={"message": "b"}, headers=bearer(ALICE))
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert client.post("/jobs/echo", json={"message": "c"}, headers=bearer(BOB)).status_code
        stored = redis_client(CACHE_DB).get(f"{deployment.name}:job:{first['id']}")
        assert stored is not None and ALICE not in stored and BOB not in stored


def test_bad_input_is_never_queued_and_makes_no_keys(deployment: Deployment) -> None:
    environment = deployment.environment(MAX_REQUEST_BYTES="2048")
    with ExitStack() as stack:
        served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        bad: list[tuple[str, bytes]] = [
            ("/jobs/echo", b'{"message": '),
            ("/jobs/echo", b'{"message": "' + b"x" * 4096 + b'"}'),
            ("/jobs/echo", b'{"message": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
            ("/jobs/sleep", b'{"seconds": "long"}'),
            ("/jobs/echo", b'{"message": "\\ud800"}'),
            ("/jobs/no_such_job", b"{}"),
            ("/jobs/echo%0D%0AX-Injected:%201", b'{"message": "hi"}'),
            ("/jobs/%00", b"{}"),
        ]
        for path, body in bad:
            response = client.post(path, content=body, headers=JSON)
            assert 400 <= response.status_code < 500, (path, response.status_code)
        assert client.get("/health").status_code == 200

        message = "nul \x00 crlf \r\n key-like *:{}[] ünïcödé 😀"
        accepted = client.post("/jobs/echo", json={"message": message})
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        deployment.job_ids.append(job_id)

        queue = redis_client(QUEUE_DB)
        assert queue.zcard(f"{deployment.name}:queue:default") == 1, "only the good job is queued"
        # The good job's record, and the list of jobs submitted without a key (GET /jobs).
        assert keys_matching(CACHE_DB, f"{deployment.name}:*") == [
            f"{deployment.name}:job:{job_id}",
            f"{deployment.name}:jobs:open",
        ]
        stack.enter_context(worker(environment, deployment.logs / "worker.log"))
        record = client.get(f"/jobs/{job_id}", params={"wait": 10}).json()
        assert record["result"] == {"message": message}


def assert_a_job_runs(settings: dict[str, str], logs: Path) -> None:
    """An api and a worker with these Redis settings run a job end to end."""
    environment = child_environment({**settings, "CACHE_BACKEND": "redis", "CPU_WORKERS": "1"})
    with ExitStack() as stack:
        served = stack.enter_context(api(environment, logs / "api.log"))
        stack.enter_context(worker(environment, logs / "worker.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=30))
        job_id = client.post("/jobs/echo", json={"message": "hi"}).json()["id"]
        assert client.get(f"/jobs/{job_id}", params={"wait": 10}).json()["status"] == "succeeded"


def test_an_acl_user_can_be_named_and_a_wrong_one_fails_fast(tmp_path: Path) -> None:
    acl = [
        "--user",
        "default",
        "off",
        "--user",
        "jobcache",
        "on",
        ">s3cret-acl",
        "~*",
        "&*",
        "+@all",
    ]
    with redis_server(extra_arguments=acl) as server:
        settings = {
            "REDIS_HOST": server.host,
            "REDIS_PORT": str(server.port),
            "REDIS_USERNAME": "jobcache",
            "REDIS_PASSWORD": "s3cret-acl",
        }
        assert_a_job_runs(settings, tmp_path)

        wrong = child_environment(
            {**settings, "CACHE_BACKEND": "redis", "REDIS_USERNAME": "intruder"}
        )
        exited = run_until_exit("api", api_command(free_port()), wrong, tmp_path / "bad.log")
        assert exited.code != 0
        assert "REDIS_PASSWORD" in exited.output and "s3cret-acl" not in exited.output
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=server.host, port=server.port).ping()


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it; returns the CA file."""

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "1", "-subj", "/CN=jobcache test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1",
            "-extfile", "san.ext")  # fmt: skip
    return directory / "ca.crt"


def test_redis_over_tls_runs_jobs_and_an_unknown_ca_fails_fast(tmp_path: Path) -> None:
    ca_file = make_certificates(tmp_path)
    tls_port = free_port()
    tls = ["--tls-port", str(tls_port), "--tls-auth-clients", "no"]
    tls += ["--tls-cert-file", str(tmp_path / "server.crt")]
    tls += ["--tls-key-file", str(tmp_path / "server.key")]
    tls += ["--tls-ca-cert-file", str(ca_file)]
    with redis_server(extra_arguments=tls) as server:
        settings = {
            "REDIS_HOST": server.host,
            "REDIS_PORT": str(tls_port),
            "REDIS_TLS": "true",
            "REDIS_TLS_CA_FILE": str(ca_file),
        }
        assert_a_job_runs(settings, tmp_path)

        untrusted = child_environment(
            {**settings, "CACHE_BACKEND": "redis", "REDIS_TLS_CA_FILE": ""}
        )
        exited = run_until_exit("api", api_command(free_port()), untrusted, tmp_path / "no-ca.log")
        assert exited.code != 0 and exited.seconds < 10
        assert f"Redis at 127.0.0.1:{tls_port}" in exited.output
