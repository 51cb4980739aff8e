"""Where callbacks may go (WEBHOOK_ALLOWED_HOSTS), checked twice: a submission's `callback_url`
when it comes (its form, its host, and a literal address), and every address the host resolves
to when a callback is sent, so that no callback reaches a private, loopback or link-local
address (this machine, the cluster's network, a cloud's metadata service) that is not listed.

The list holds host names (`hooks.example.com`), `*.example.com` (every subdomain of
example.com, not example.com itself), `*` (any host) and IP addresses. A name or wildcard
allows a host; only an exact name, or the address itself, allows an address that is not
public: a wildcard, `*` included, never does, so that nobody who controls a subdomain's DNS
can point a callback inside.
"""

import functools
import ipaddress
import re
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


class RefusedError(ValueError):
    """A callback may not go there; the message says why (after "callback_url refused: ")."""


@dataclass(frozen=True)
class AllowedHosts:
    """The parsed WEBHOOK_ALLOWED_HOSTS."""

    names: frozenset[str]
    """Exact host names, lower-case, ASCII (IDNA), without a trailing dot."""
    suffixes: tuple[str, ...]
    """`.example.com` for each `*.example.com`."""
    addresses: frozenset[IPAddress]
    any_host: bool
    """`*`: any host whose addresses are public."""

    @staticmethod
    def parse(setting: str) -> "AllowedHosts":
        """The hosts of the setting's comma-separated entries; ValueError naming a bad one."""
        return _parsed(setting)

    @property
    def empty(self) -> bool:
        return not (self.names or self.suffixes or self.addresses or self.any_host)

    def allows(self, host: str) -> bool:
        """Whether a callback may go to `host` (its addresses are checked when it is sent)."""
        address = literal_address(host)
        if address is not None:
            return address in self.addresses or self.any_host
        return (
            self.any_host
            or host in self.names
            or any(host.endswith(suffix) for suffix in self.suffixes)
        )

    def lists(self, host: str, address: IPAddress) -> bool:
        """Whether `host` or `address` is listed exactly, which alone allows an address that
        is not public."""
        return host in self.names or address in self.addresses


@functools.lru_cache(maxsize=8)
def _parsed(setting: str) -> AllowedHosts:
    """Parsed once per value: the api checks every submission's callback against it."""
    names: set[str] = set()
    suffixes: list[str] = []
    addresses: set[IPAddress] = set()
    any_host = False
    for entry in (part.strip() for part in setting.split(",")):
        if not entry:
            continue
        if entry == "*":
            any_host = True
        elif (address := literal_address(entry.removeprefix("[").removesuffix("]"))) and (
            entry.startswith("[") == entry.endswith("]")
        ):
            addresses.add(address)
        elif entry.startswith("*.") and (name := host_name(entry[2:])) is not None:
            suffixes.append("." + name)
        elif (name := host_name(entry)) is not None:
            names.add(name)
        else:
            raise ValueError(
                f"{entry!r} is not a host name, `*.` and a domain, `*` or an IP address "
                "(give hosts only: no scheme, port or path)"
            )
    return AllowedHosts(frozenset(names), tuple(suffixes), frozenset(addresses), any_host)


def literal_address(host: str) -> IPAddress | None:
    """The IP address `host` is written as, if it is one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def host_name(text: str) -> str | None:
    """`text` as a host name to compare (lower-case ASCII, no trailing dot), or None if it is
    not one. A name whose last label is a number is not one: resolvers read `127.1` or
    `2130706433` as addresses."""
    try:
        name = text.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = name.split(".")
    if len(name) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        return None
    return name


def public_form(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo, NAT64), whose own kind
    decides where a connection to it goes; other addresses as they are."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if address in NAT64_PREFIX:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def non_public_kind(address: IPAddress) -> str | None:
    """What kind of address this is when it is not a public unicast one (`loopback`,
    `private`...); None for a public one."""
    address = public_form(address)
    for kind, is_kind in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if is_kind:
            return kind
    return None if address.is_global else "non-public"


def refuse_address(host: str, address: IPAddress, hosts: AllowedHosts) -> None:
    """Raise RefusedError when `address` (of `host`) is not public and neither is listed."""
    kind = non_public_kind(address)
    if kind is None or hosts.lists(host, address):
        return
    named = "" if literal_address(host) == address else f"{host} resolves to "
    raise RefusedError(
        f"{named}{address}, a {kind} address, which WEBHOOK_ALLOWED_HOSTS does not list "
        "(only the exact host name or address allows one)"
    )


@dataclass(frozen=True)
class Destination:
    """A callback URL, parsed: where to connect and what to call the host there."""

    url: httpx.URL
    host: str
    """The host as it is compared and resolved: lower-case ASCII, no brackets or trailing dot."""
    port: int

    @classmethod
    def of(cls, url: str) -> "Destination":
        """The destination of a callback URL, or RefusedError saying what is wrong with it."""
        if len(url) > MAX_URL_LENGTH:
            raise RefusedError(f"the URL is {len(url)} characters long, more than {MAX_URL_LENGTH}")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise RefusedError(f"not a URL ({error})") from None
        if parsed.scheme not in ("http", "https"):
            raise RefusedError("only http:// and https:// URLs are called back")
        if parsed.userinfo:
            raise RefusedError("the URL carries a user name or password")
        raw_host = parsed.raw_host.decode("ascii", "replace")
        if not raw_host:
            raise RefusedError("the URL has no host")
        host = raw_host if literal_address(raw_host) else host_name(raw_host)
        if host is None:
            raise RefusedError(f"{parsed.host!r} is not a host name or an IP address")
        return cls(parsed, host, parsed.port or (443 if parsed.scheme == "https" else 80))


def check_callback_url(url: str, hosts: AllowedHosts) -> Destination:
    """A submission's callback URL, if the settings let callbacks go there; otherwise
    RefusedError. A host name's addresses are checked when each callback is sent."""
    destination = Destination.of(url)
    if not hosts.allows(destination.host):
        raise RefusedError(f"{destination.host} is not in WEBHOOK_ALLOWED_HOSTS")
    address = literal_address(destination.host)
    if address is not None:
        refuse_address(destination.host, address, hosts)
    return destination
