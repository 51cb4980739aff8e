"""The docs site builds strictly offline, and every HTTP example gets the answer its page shows."""

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import client_for, settings_for_test

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The pages whose examples are requests to the api (docs/http-api.md says how they read).
HTTP_PAGES = ("http-api.md", "callbacks.md")

# Any attempt to reach the network while the site is built fails the build: nothing (a web
# font, a theme's asset, a plugin) may be fetched at build time.
OFFLINE_BUILD = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("the docs' build tried to reach the network")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from mkdocs.__main__ import cli
sys.exit(cli())
"""


def test_the_site_builds_strictly_and_offline(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link or anchor, a page left out of the nav or any
    other warning fails it, and so does any attempt to reach the network."""
    site = tmp_path / "site"
    # Material prints a banner about MkDocs 2.0 on every build; it is no warning of ours.
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-c", OFFLINE_BUILD, "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    assert "WARNING" not in build.stderr, build.stderr
    for page in DOCS.glob("*.md"):
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.exists(), f"{page.name} was not built"
    assert not any(
        re.search(r"fonts\.(googleapis|gstatic)\.com", html.read_text())
        for html in site.rglob("*.html")
    ), "a page loads web fonts"


def test_the_readme_keeps_the_quick_start_and_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert re.search(r"^curl .*http://127\.0\.0\.1:8000/jobs/", readme, re.MULTILINE)
    for page in DOCS.glob("*.md"):
        assert f"](docs/{page.name}" in readme, f"the README's tour has no link to {page.name}"
    assert len(readme.splitlines()) < 150, "the README is the front page: keep it short"


# The examples -----------------------------------------------------------------------------


@dataclass
class Block:
    """A fenced block of a page: its language, its text, and the lines it spans."""

    language: str
    text: str
    first: int
    last: int


@dataclass
class Answer:
    """An answer, as a page shows it or as the api gave it."""

    status: int | None  # None: the page shows only the body of a successful answer
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    events: list[tuple[str, Any]] | None = None  # an event stream's (name, data) pairs


@dataclass
class Example:
    """A request of a page (a `curl` command) and the answer the page shows for it."""

    page: str
    line: int
    command: str
    documented: Answer


@dataclass
class Assignment:
    """`NAME=value` in a block of its own: NAME is what an earlier answer gave where the page
    shows `value`."""

    page: str
    line: int
    name: str
    value: str


def fenced_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    opened: tuple[str, int] | None = None
    for number, line in enumerate(lines):
        if opened is None and line.startswith("```"):
            opened = (line[3:].strip(), number)
        elif opened is not None and line.rstrip() == "```":
            language, first = opened
            blocks.append(Block(language, "\n".join(lines[first + 1 : number]), first, number))
            opened = None
    assert opened is None, "a fenced block is never closed"
    return blocks


ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S+)$")


def examples_of(page: str) -> list[Example | Assignment]:
    """The page's examples and assignments, in order. Every `sh` block that runs `curl` must be
    followed at once by its answer: a `json`, `http` or `text` block."""
    blocks = fenced_blocks((DOCS / page).read_text())
    steps: list[Example | Assignment] = []
    for index, block in enumerate(blocks):
        if block.language != "sh":
            continue
        lines = [line for line in block.text.splitlines() if line.strip()]
        if all(ASSIGNMENT.match(line) for line in lines):
            for line in lines:
                name, value = ASSIGNMENT.match(line).groups()  # type: ignore[union-attr]
                [value] = shlex.split(value)
                steps.append(Assignment(page, block.first + 1, name, value))
            continue
        if not re.search(r"^\s*curl\b", block.text, re.MULTILINE):
            continue
        where = f"{page}:{block.first + 1}"
        answer = blocks[index + 1] if index + 1 < len(blocks) else None
        assert answer is not None and answer.first == block.last + 1, (
            f"{where}: a curl example must be followed at once by the answer it gets"
        )
        steps.append(Example(page, block.first + 1, block.text, documented_answer(answer, where)))
    return steps


def documented_answer(block: Block, where: str) -> Answer:
    if block.language == "json":
        return Answer(None, body=json.loads(block.text))
    if block.language == "text":
        return Answer(None, events=server_sent_events(block.text))
    assert block.language == "http", f"{where}: an answer is a json, http or text block"
    head, _, body = block.text.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    status = re.fullmatch(r"HTTP/1\.1 (\d{3})( .*)?", status_line)
    assert status is not None, f"{where}: an http answer starts with its status line"
    headers = dict(line.split(": ", 1) for line in header_lines)
    return Answer(
        int(status.group(1)),
        {name.lower(): value for name, value in headers.items()},
        json.loads(body) if body.strip() else None,
    )


def server_sent_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for chunk in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: str | None


def curl_request(command: str, variables: dict[str, str], where: str) -> Request:
    """The request of a `curl` command, with the shell variables set by earlier steps."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"{where}: ${name} is set by no assignment before it"
        return variables[name]

    words = [
        re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, word)
        for word in shlex.split(command.replace("\\\n", " "), comments=True)
    ]
    assert words[0] == "curl", f"{where}: one curl command per example"
    method, url, body, headers = None, None, None, {}
    arguments = iter(words[1:])
    for word in arguments:
        if word == "-X":
            method = next(arguments)
        elif word == "-H":
            name, _, value = next(arguments).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data", "--data-raw"):
            body = next(arguments)
        elif re.fullmatch(r"-[siSN]+", word):
            pass  # silent, headers shown, no buffering: how the answer is printed
        elif word.startswith("http://"):
            url = word
        else:
            raise AssertionError(f"{where}: curl option {word!r} is not understood here")
    assert url is not None, f"{where}: no URL"
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return Request(method or ("POST" if body is not None else "GET"), path, headers, body)


def actual_answer(response: httpx.Response) -> Answer:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return Answer(
            response.status_code, dict(response.headers), None, server_sent_events(response.text)
        )
    body = response.json() if response.content else None
    return Answer(response.status_code, dict(response.headers), body)


def assert_same_shape(documented: Any, actual: Any, where: str) -> None:
    """Same keys at every depth; the same JSON type where both are set (null is any value
    that varies between runs); a list shown with items is not empty."""
    if documented is None or actual is None:
        return
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert sorted(actual) == sorted(documented), (
            f"{where}: keys {sorted(actual)}, the docs show {sorted(documented)}"
        )
        for key, value in documented.items():
            assert_same_shape(value, actual[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        assert bool(actual) == bool(documented), (
            f"{where}: {len(actual)} items, the docs show {len(documented)}"
        )
        for index, item in enumerate(actual):
            assert_same_shape(
                documented[min(index, len(documented) - 1)], item, f"{where}[{index}]"
            )
    else:
        kinds = (bool, (int, float), str)
        kind = next(kind for kind in kinds if isinstance(documented, kind))
        assert isinstance(actual, kind) and (kind is bool or not isinstance(actual, bool)), (
            f"{where}: {actual!r} is not of the type of {documented!r}"
        )


# Headers whose values differ from run to run; the others shown must be the same.
VARYING_HEADERS = {"location", "etag", "cache-control", "content-length", "retry-after"}


def assert_answer_as_documented(documented: Answer, actual: Answer, where: str) -> None:
    if documented.status is None:
        assert actual.status is not None and 200 <= actual.status < 300, (
            f"{where}: answered {actual.status}: {actual.body!r}"
        )
    else:
        assert actual.status == documented.status, (
            f"{where}: answered {actual.status}, the docs show {documented.status}: {actual.body!r}"
        )
    for name, value in documented.headers.items():
        assert name in actual.headers, f"{where}: no {name} header"
        if name not in VARYING_HEADERS:
            assert actual.headers[name] == value, f"{where}: {name}: {actual.headers[name]}"
    if documented.events is not None:
        assert actual.events, f"{where}: no events"
        shown = dict(documented.events)
        assert actual.events[-1][0] == documented.events[-1][0], f"{where}: last event"
        for name, data in actual.events:
            assert_same_shape(shown.get(name, documented.events[-1][1]), data, f"{where} {name}")
    else:
        assert (actual.body is None) == (documented.body is None), f"{where}: body"
        assert_same_shape(documented.body, actual.body, f"{where}: body")


def found_at(documented: Any, value: str) -> Iterator[tuple[Any, ...]]:
    """The paths in `documented` (a JSON value) where `value` is."""
    if documented == value:
        yield ()
    elif isinstance(documented, dict):
        for key, item in documented.items():
            yield from ((key, *path) for path in found_at(item, value))
    elif isinstance(documented, list):
        for index, item in enumerate(documented):
            yield from ((index, *path) for path in found_at(item, value))


def bound_value(assignment: Assignment, answered: list[tuple[Answer, Answer]]) -> str:
    """What the api gave where the latest answer that shows the assigned value shows it."""
    where = f"{assignment.page}:{assignment.line}"
    for documented, actual in reversed(answered):
        for name, value in documented.headers.items():
            if value == assignment.value:
                return actual.headers[name]
        for path in found_at(documented.body, assignment.value):
            given: Any = actual.body
            for step in path:
                given = given[step]
            assert isinstance(given, str), f"{where}: the api gave {given!r} there"
            return given
    raise AssertionError(f"{where}: no earlier answer shows {assignment.value}")


# A secret of this test's own: 32 random bytes, as WEBHOOK_SECRET takes them.
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMzu2Ulq7JFk="


@pytest.fixture
async def apis(namespace: str) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The api as the examples expect it, in the embedded mode: `open` as `make run` starts it
    (with callbacks set up, for docs/callbacks.md), `keyed` with `API_KEYS=key1` and
    `ADMIN_API_KEYS=admin1`."""
    common = {"cache_backend": "local", "cpu_workers": 1}
    async with AsyncExitStack() as stack:
        yield {
            "open": await stack.enter_async_context(
                client_for(
                    settings_for_test(
                        cache_namespace=f"{namespace}-open",
                        webhook_secret=WEBHOOK_SECRET,
                        webhook_allowed_hosts="hooks.example.com",
                        **common,
                    )
                )
            ),
            "keyed": await stack.enter_async_context(
                client_for(
                    settings_for_test(
                        cache_namespace=f"{namespace}-keyed",
                        api_keys="key1",
                        admin_api_keys="admin1",
                        **common,
                    )
                )
            ),
        }


@pytest.mark.parametrize("page", HTTP_PAGES)
async def test_every_http_example_gets_the_answer_the_docs_show(
    page: str, apis: dict[str, httpx.AsyncClient]
) -> None:
    """Each curl example of the page, in order, as a reader would send them in one shell:
    sent to the api, its answer has the status, headers and JSON shape the page shows."""
    steps = examples_of(page)
    assert any(isinstance(step, Example) for step in steps), f"{page} has no examples"
    variables: dict[str, str] = {}
    answered: list[tuple[Answer, Answer]] = []
    for step in steps:
        where = f"{step.page}:{step.line}"
        if isinstance(step, Assignment):
            variables[step.name] = bound_value(step, answered)
            continue
        request = curl_request(step.command, variables, where)
        keyed = "Authorization" in request.headers
        response = await apis["keyed" if keyed else "open"].request(
            request.method,
            request.path,
            headers=request.headers,
            content=request.body,
            timeout=30,
        )
        actual = actual_answer(response)
        assert_answer_as_documented(step.documented, actual, where)
        answered.append((step.documented, actual))


async def test_every_route_of_the_api_has_an_example() -> None:
    """The HTTP API page shows a request for each operation of the api's OpenAPI schema (but
    the metrics' and the dashboard's, which the Monitoring page shows)."""
    async with client_for(settings_for_test(cache_backend="local", cpu_workers=1)) as api:
        schema = (await api.get("/openapi.json")).json()
    operations = {
        (method.upper(), template_of(path))
        for path, item in schema["paths"].items()
        for method in item
        if not path.startswith(("/metrics", "/dashboard"))
    }
    steps = examples_of("http-api.md")
    # Each variable as the page shows it: a job id is a job id, whichever job it names.
    shown_values = {step.name: step.value for step in steps if isinstance(step, Assignment)}
    shown = {
        (request.method, template_of(request.path.partition("?")[0]))
        for step in steps
        if isinstance(step, Example)
        for request in [curl_request(step.command, shown_values, step.page)]
    }
    assert operations - shown == set(), "operations with no example in docs/http-api.md"


def template_of(path: str) -> str:
    """/jobs/Z3o0bXrT6F1bd9nJ3u3c1A/cancel and /jobs/{job_id}/cancel alike: /jobs/{}/cancel;
    /jobs/echo and /jobs/{name}: /jobs/{name}; /queues/default/pause and
    /queues/{name}/pause: /queues/{name}/pause."""
    path = re.sub(r"\{job_id\}|(?<=/jobs/)[A-Za-z0-9_-]{22}(?=/|$)", "{}", path)
    path = re.sub(r"^/queues/[^/]+(?=/)", "/queues/{name}", path)
    return re.sub(r"^/jobs/(?!\{\})[^/]+", "/jobs/{name}", path)
