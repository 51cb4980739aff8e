"""The `jobcache` command: jobcache's HTTP API from a shell, printing the api's JSON, so that
scripts can submit jobs and read results without writing Python."""

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from jobcache_client.base import DEFAULT_URL
from jobcache_client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    JobcacheError,
    NotFound,
    PayloadTooLarge,
    TryAgainLater,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
)
from jobcache_client.jobs import Job, JobStatus
from jobcache_client.retries import DEFAULT_RETRIES
from jobcache_client.sync_client import Client
from jobcache_client.version import __version__

EXIT_JOB_UNSUCCESSFUL = 1
EXIT_USAGE = 2
EXIT_CODES: tuple[tuple[type[JobcacheError], int], ...] = (
    (ConnectionFailed, 3),
    (NotFound, 4),
    (Unauthorized, 5),
    (BadRequest, 6),
    (ValidationError, 6),
    (PayloadTooLarge, 6),
    (UnsupportedMediaType, 6),
    (Conflict, 7),
    (TryAgainLater, 8),
    (WaitTimeout, 9),
)
EXIT_OTHER_ERROR = 10
EPILOG = """\
The api's address comes from --url or JOBCACHE_URL, its key from --api-key or JOBCACHE_API_KEY.
JSON arguments may be given inline, as @file, or as - for standard input.

exit codes: 0 done; 1 the job ended failed, cancelled or expired (submit --wait, wait); 2 bad
arguments; 3 the api could not be reached; 4 not found; 5 unauthorized (401, 403); 6 the
request was refused (400, 413, 415, 422); 7 conflict (the job had finished, or cannot be run
again); 8 rate limited or
unavailable after retries; 9 wait timed out (the last record is printed); 10 anything else.
"""


class UsageError(Exception):
    """An argument the parser took but that means nothing (JSON that is not JSON)."""


def json_argument(text: str, what: str) -> Any:
    """A JSON argument: inline, `@path` for a file's, or `-` for standard input's."""
    try:
        if text == "-":
            text = sys.stdin.read()
        elif text.startswith("@"):
            with open(text[1:], encoding="utf-8") as source:
                text = source.read()
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{what} is not JSON: {error}") from None


def parameters_argument(text: str) -> dict[str, Any]:
    parameters = json_argument(text, "PARAMS")
    if not isinstance(parameters, dict):
        raise UsageError("PARAMS must be a JSON object")
    return parameters


def parameter_list_argument(text: str) -> list[dict[str, Any]]:
    parameters = json_argument(text, "PARAMS_LIST")
    if not isinstance(parameters, list) or not all(isinstance(each, dict) for each in parameters):
        raise UsageError("PARAMS_LIST must be a JSON array of objects")
    return parameters


def show(document: Any, *, indent: int | None = 2) -> None:
    print(json.dumps(document, indent=indent, ensure_ascii=False))


def records(jobs: Iterable[Job]) -> list[Any]:
    return [dict(job.raw) for job in jobs]


def outcome(job: Job) -> int:
    """Print a finished job; the exit code its end stands for."""
    show(dict(job.raw))
    return 0 if job.status is JobStatus.SUCCEEDED else EXIT_JOB_UNSUCCESSFUL


def submission_options(options: argparse.Namespace) -> dict[str, Any]:
    return {
        "idempotency_key": options.idempotency_key,
        "callback_url": options.callback_url,
        "expires_in": options.expires_in,
    }


def submit(client: Client, options: argparse.Namespace) -> int:
    parameters = parameters_argument(options.parameters)
    job = client.submit(options.name, parameters, **submission_options(options))
    if not options.wait:
        show(dict(job.raw))
        return 0
    return outcome(client.wait(job.id, options.timeout))


def submit_many(client: Client, options: argparse.Namespace) -> int:
    parameters = parameter_list_argument(options.parameters)
    jobs = client.submit_many(
        options.name, parameters, max_batch=options.max_batch, **submission_options(options)
    )
    show({"jobs": records(jobs)})
    return 0


def get(client: Client, options: argparse.Namespace) -> int:
    show(dict(client.get(options.job_id).raw))
    return 0


def wait(client: Client, options: argparse.Namespace) -> int:
    return outcome(client.wait(options.job_id, options.timeout))


def events(client: Client, options: argparse.Namespace) -> int:
    for job in client.events(options.job_id):
        show(dict(job.raw), indent=None)
        sys.stdout.flush()
    return 0


def list_jobs(client: Client, options: argparse.Namespace) -> int:
    if options.all:
        jobs = client.iter_jobs(status=options.status, name=options.name, page_size=options.limit)
        show({"jobs": records(jobs), "next": None})
        return 0
    page = client.list(
        status=options.status, name=options.name, limit=options.limit, cursor=options.cursor
    )
    show({"jobs": records(page.jobs), "next": page.next})
    return 0


def cancel(client: Client, options: argparse.Namespace) -> int:
    show(dict(client.cancel(options.job_id).raw))
    return 0


def retry(client: Client, options: argparse.Namespace) -> int:
    if options.failed:
        if options.job_id is not None:
            raise UsageError("give a job's ID, or --failed with --queue or --name: not both")
        if options.queue is None and options.name is None:
            raise UsageError("retry --failed needs --queue NAME or --name TYPE")
        retried = client.retry_failed(queue=options.queue, name=options.name, since=options.since)
        show(dict(retried.raw))
        return 0
    if options.job_id is None:
        raise UsageError("give a job's ID, or --failed with --queue or --name")
    if options.queue or options.name or options.since:
        raise UsageError("--queue, --name and --since go with --failed")
    show(dict(client.retry(options.job_id).raw))
    return 0


def since_argument(text: str) -> datetime:
    """An ISO 8601 time; UTC when it names no offset."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def delete(client: Client, options: argparse.Namespace) -> int:
    client.delete(options.job_id)
    show({"id": options.job_id, "deleted": True})
    return 0


def queues(client: Client, options: argparse.Namespace) -> int:
    """`queues`: list them; `queues pause NAME`, `queues resume NAME`: steer one."""
    if options.action is None:
        show(client.queues())
    elif options.queue is None:
        raise UsageError(f"queues {options.action} needs the queue's name")
    elif options.action == "pause":
        show(client.pause_queue(options.queue))
    else:
        show(client.resume_queue(options.queue))
    return 0


Command = Callable[[Client, argparse.Namespace], int]


def connection_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--url", default=default, help=f"the api's base URL (default {DEFAULT_URL})"
    )
    parser.add_argument("--api-key", default=default, help="sent as `Authorization: Bearer <key>`")
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES if default is None else default,
        help="times a request is sent again after a 429, 503 or failed connection "
        f"(default {DEFAULT_RETRIES}; after a refused connection, once at most)",
    )


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="jobcache",
        description="Submit jobs to a jobcache api and read them; prints the api's JSON.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    main.add_argument("--version", action="version", version=f"jobcache-client {__version__}")
    connection_options(main, None)
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        # Also taken after the command; there only set when given, so as not to hide one
        # given before it.
        connection_options(sub, argparse.SUPPRESS)
        sub.set_defaults(run=run)
        return sub

    def submission_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("name", metavar="NAME", help="the job type")
        sub.add_argument("--idempotency-key", help="a repeat with the same key queues nothing")
        sub.add_argument("--callback-url", help="where the api reports the job's end")
        sub.add_argument(
            "--expires-in",
            type=float,
            metavar="SECONDS",
            help="not started by then, a job ends `expired` instead of running late",
        )

    def job_id(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("job_id", metavar="ID")

    def wait_timeout(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--timeout", type=float, help="seconds to wait at most (default: none)")

    sub = command("submit", submit, "queue a job; print its record")
    submission_arguments(sub)
    sub.add_argument("parameters", metavar="PARAMS", help="the parameters, a JSON object")
    sub.add_argument("--wait", action="store_true", help="wait and print the finished record")
    wait_timeout(sub)
    sub = command("submit-many", submit_many, "queue a job per parameter set, in one batch")
    submission_arguments(sub)
    sub.add_argument("parameters", metavar="PARAMS_LIST", help="a JSON array of objects")
    sub.add_argument("--max-batch", type=int, default=1000, help="parameter sets per request")
    job_id(command("get", get, "print a job's record"))
    sub = command("wait", wait, "wait until a job has finished; print its record")
    job_id(sub)
    wait_timeout(sub)
    job_id(command("events", events, "print a job's record at each change, one line each"))
    sub = command("list", list_jobs, "print a page of jobs, newest first")
    sub.add_argument("--status", choices=[status.value for status in JobStatus])
    sub.add_argument("--name", help="only jobs of this type")
    sub.add_argument("--limit", type=int, help="jobs per page (the api's default: 50)")
    sub.add_argument("--cursor", help="the `next` of an earlier page")
    sub.add_argument("--all", action="store_true", help="every page (ignores --cursor)")
    job_id(command("cancel", cancel, "cancel a queued or running job"))
    job_id(command("delete", delete, "delete a job's record (cancelling it first)"))
    sub = command(
        "queues", queues, "print the queues, or pause or resume one (an admin key, with keys)"
    )
    sub.add_argument("action", nargs="?", choices=["pause", "resume"], metavar="pause|resume")
    sub.add_argument("queue", nargs="?", metavar="NAME")
    sub = command(
        "retry",
        retry,
        "run a failed, cancelled or expired job again under its id; or, with --failed, every "
        "kept failure of a queue or job type (an admin key)",
    )
    sub.add_argument("job_id", metavar="ID", nargs="?")
    sub.add_argument(
        "--failed", action="store_true", help="every kept failure of --queue or --name"
    )
    sub.add_argument("--queue", help="with --failed: the queue")
    sub.add_argument("--name", help="with --failed: the job type")
    sub.add_argument(
        "--since",
        type=since_argument,
        metavar="TIME",
        help="with --failed: only those that ended at or after this ISO 8601 time (UTC if "
        "it names no offset)",
    )
    return main


def exit_code(error: JobcacheError) -> int:
    for kinds, code in EXIT_CODES:
        if isinstance(error, kinds):
            return code
    return EXIT_OTHER_ERROR


def main(arguments: Sequence[str] | None = None) -> int:
    options = parser().parse_args(arguments)
    url = options.url or os.environ.get("JOBCACHE_URL") or DEFAULT_URL
    api_key = options.api_key or os.environ.get("JOBCACHE_API_KEY") or None
    run: Command = options.run
    try:
        with Client(url, api_key, retries=options.retries) as client:
            return run(client, options)
    except UsageError as error:
        print(f"jobcache: {error}", file=sys.stderr)
        return EXIT_USAGE
    except WaitTimeout as error:
        show(dict(error.job.raw))
        print(f"jobcache: {error}", file=sys.stderr)
        return exit_code(error)
    except JobcacheError as error:
        print(f"jobcache: {error}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and no one to say it to.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
