"""A host and a port as one string, the way URLs and Prometheus' targets write them: an IPv6
host in brackets (`[::1]:9100`), since its own colons would otherwise read as the port's."""

import ipaddress
import re

HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
BRACKETED = re.compile(r"^\[([^\]]+)\](?::(\d{1,5}))?$")


def join_host_port(host: str, port: int) -> str:
    """`host:port`, or `[host]:port` when `host` is an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str) -> tuple[str, int | None]:
    """The host and the port (None when not given) of `host`, `host:port`, `[v6 address]`,
    `[v6 address]:port` or a bare IPv6 address; a ValueError says what is wrong."""
    text = text.strip()
    bracketed = BRACKETED.fullmatch(text)
    if bracketed is not None:
        host, port = bracketed[1], bracketed[2]
        _ipv6(host)
    elif text.count(":") > 1:
        host, port = _ipv6(text), None
    else:
        host, separator, port = text.partition(":")
        if HOSTNAME.fullmatch(host) is None:
            raise ValueError(f"{host!r} is not a host name or address")
        if separator and not port:
            raise ValueError("the port after ':' is missing")
    if not port:
        return host, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def _ipv6(host: str) -> str:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IPv6 address (write a host with a port as host:port, "
            "an IPv6 address with a port as [address]:port)"
        ) from None
    return host
