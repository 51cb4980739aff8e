"""A real HTTP server on 127.0.0.1 that receives callbacks in tests: it keeps every request it
gets and answers each path as the test tells it (a status, after a delay if asked), from a
thread of its own, so that in-process tests and tests of real worker processes both reach it."""

import base64
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from standardwebhooks.webhooks import Webhook

from tests.local_http import serving

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
"""The signing key the tests give jobcache (WEBHOOK_SECRET) and check signatures with."""


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0
    """Seconds to wait before answering (a slow or hanging receiver)."""
    drip: float = 0.0
    """Seconds between the bytes of the answer's status line (a receiver that keeps the
    connection busy without ever finishing its answer in time)."""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    at: float
    """time.monotonic() when it arrived."""
    answered: int
    """The status it was answered with."""

    def verified(self, secret: str = SECRET) -> dict[str, Any]:
        """The body, once standardwebhooks' own check of the signature has passed."""
        record: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return record


@dataclass
class Receiver:
    port: int = 0
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to `path` with these, in order, the last one from then on."""
        with self.lock:
            self.answers[path] = list(answers)

    def next_answer(self, path: str) -> Answer:
        with self.lock:
            queued = self.answers.get(path) or [Answer()]
            return queued.pop(0) if len(queued) > 1 else queued[0]

    def keep(self, request: Received) -> None:
        with self.lock:
            self.received.append(request)

    def at(self, path: str = "/hook") -> list[Received]:
        """The requests `path` got so far, in order."""
        with self.lock:
            return [request for request in self.received if request.path == path]

    def for_job(self, job_id: str) -> list[Received]:
        """The callbacks of one job (its webhook-id), in order."""
        with self.lock:
            return [r for r in self.received if r.headers.get("webhook-id") == f"msg_{job_id}"]


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = receiver.next_answer(self.path)
            arrived = time.monotonic()
            receiver.keep(Received(self.command, self.path, headers, body, arrived, answer.status))
            if answer.delay:
                time.sleep(answer.delay)
            try:
                if answer.drip:
                    for byte in f"HTTP/1.1 {answer.status} OK\r\n".encode():
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(answer.drip)
                    self.end_headers()
                    return
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender gave up waiting and closed the connection

        # Kept too: a sender that followed a redirect, say, would come back with a GET.
        do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest would show every request."""

    return Handler


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A receiver on a free loopback port, serving until the context ends."""
    receiver = Receiver()
    with serving(handler_for(receiver), "webhook-receiver") as port:
        receiver.port = port
        yield receiver
