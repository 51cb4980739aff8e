"""One attempt at a callback: resolve its host, refuse an address WEBHOOK_ALLOWED_HOSTS does not
allow (shared/webhooks/addresses.py), then POST to the address that was checked, not to a
second lookup of the name (which a rebinding DNS server could answer differently), without
following a redirect, within WEBHOOK_TIMEOUT all told."""

import asyncio
import socket
from dataclasses import dataclass

import httpx

from shared.webhooks.addresses import (
    AllowedHosts,
    Destination,
    IPAddress,
    RefusedError,
    check_callback_url,
    literal_address,
    refuse_address,
)

USER_AGENT = "jobcache-callbacks/1.0 (Standard Webhooks)"


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt went."""

    status: int | None
    """The receiver's HTTP status; None when it did not answer."""
    error: str | None
    """Why the attempt failed; None when the receiver took it (a 2xx)."""
    final: bool = False
    """No later attempt can do better: the destination itself is refused."""

    @property
    def delivered(self) -> bool:
        return self.error is None


class CallbackSender:
    """POSTs callbacks with one HTTP client, which keeps no connection between attempts: each
    goes to an address checked for it, with its own TLS server name."""

    def __init__(self, hosts: AllowedHosts, timeout: float) -> None:
        self._hosts = hosts
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            # No proxy from the environment: it would connect to the name, not the address.
            trust_env=False,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"user-agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        """POST `body` (JSON) with `headers` to `url`; never raises for what the network or
        the receiver does."""
        try:
            destination = check_callback_url(url, self._hosts)
            async with asyncio.timeout(self._timeout):
                address = await self._checked_address(destination)
                status = await self._send(destination, address, body, headers)
        except RefusedError as error:
            return AttemptResult(None, f"refused: {error}", final=True)
        except (TimeoutError, httpx.TimeoutException):
            return AttemptResult(None, f"no answer within {self._timeout:g}s (WEBHOOK_TIMEOUT)")
        except socket.gaierror as error:
            return AttemptResult(None, f"could not resolve the host: {error.strerror}")
        except (httpx.TransportError, OSError) as error:
            return AttemptResult(None, f"could not connect: {describe(error)}")
        if 200 <= status < 300:
            return AttemptResult(status, None)
        if 300 <= status < 400:
            return AttemptResult(
                status, f"the receiver answered {status}, a redirect, which is not followed"
            )
        return AttemptResult(status, f"the receiver answered {status}")

    async def _checked_address(self, destination: Destination) -> IPAddress:
        """The address to connect to: the host's first, once all of them passed the check."""
        host = destination.host
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, destination.port, type=socket.SOCK_STREAM
            )
            resolved = [literal_address(str(info[4][0])) for info in found]
            addresses = list(dict.fromkeys(each for each in resolved if each is not None))
            if not addresses:
                raise OSError(f"{host} resolved to no usable address")
        for address in addresses:
            refuse_address(host, address, self._hosts)
        return addresses[0]

    async def _send(
        self, destination: Destination, address: IPAddress, body: str, headers: dict[str, str]
    ) -> int:
        url = destination.url
        pinned = url.copy_with(host=str(address))
        extensions = {"sni_hostname": destination.host} if url.scheme == "https" else {}
        netloc = url.netloc.decode("ascii")
        async with self._client.stream(
            "POST",
            pinned,
            content=body.encode(),
            headers={**headers, "host": netloc, "content-type": "application/json"},
            extensions=extensions,
        ) as response:
            # The answer's body is not read: a receiver cannot make a worker hold a large one.
            return response.status_code


def describe(error: BaseException) -> str:
    """An error of the network as the record shows it: its kind, and its message if any."""
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
