"""What the sync and async clients share: their constructor and settings, and how a `Call`
becomes an httpx request (URL, headers, API key, timeouts)."""

from typing import Generic, TypeVar

import httpx

from jobcache_client.operations import Call
from jobcache_client.retries import DEFAULT_RETRIES, RetryPolicy
from jobcache_client.version import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
USER_AGENT = f"jobcache-client/{__version__}"

HttpClient = TypeVar("HttpClient", httpx.Client, httpx.AsyncClient)
Transport = TypeVar("Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)


class ClientBase(Generic[HttpClient, Transport]):
    """A client of one jobcache api at `base_url`, sending `api_key` as its bearer token.

    `timeout` is httpx's (seconds, or an `httpx.Timeout`); long polls and event streams are
    given longer to answer. `retries` is how many times a request is sent again after a 429,
    503 or failed connection, or a whole `RetryPolicy`. The client opens its own httpx client
    (on `transport`, if given) and closes it with itself; an `http_client` handed in is used
    as it is (its own base URL and headers aside) and left open.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int | RetryPolicy = DEFAULT_RETRIES,
        http_client: HttpClient | None = None,
        transport: Transport | None = None,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("give an http_client or a transport, not both")
        self.base_url = base_url.rstrip("/")
        self.retry_policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries)
        self.timeout = httpx.Timeout(timeout)
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._owns_http_client = http_client is None
        self._http: HttpClient = (
            self._open_http_client(transport) if http_client is None else http_client
        )

    def _open_http_client(self, transport: Transport | None) -> HttpClient:
        raise NotImplementedError

    def _request(self, call: Call) -> httpx.Request:
        return self._http.build_request(
            call.method,
            self.base_url + call.path,
            params=call.params,
            json=call.body,
            headers={**self._headers, **call.headers},
            timeout=self._timeout_for(call),
        )

    def _timeout_for(self, call: Call) -> httpx.Timeout:
        read = self.timeout.read
        if call.read_timeout is None or read is None or read >= call.read_timeout:
            return self.timeout
        return httpx.Timeout(
            connect=self.timeout.connect,
            read=call.read_timeout,
            write=self.timeout.write,
            pool=self.timeout.pool,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"
