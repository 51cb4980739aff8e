"""The address a worker announces for its metrics and health endpoint (worker/monitoring.py),
which the api lists for Prometheus at GET /metrics/targets: one that others can reach."""

import socket

from shared.host_port import join_host_port, split_host_port
from shared.settings import Settings

ANY_ADDRESS = ("", "0.0.0.0", "::")


def advertised_address(settings: Settings, port: int) -> str:
    """`host:port` (`[address]:port` for IPv6, as Prometheus takes it) of the endpoint that
    listens on `port`: WORKER_METRICS_ADVERTISE when set, else the host it finds."""
    if settings.worker_metrics_advertise is not None:
        host, announced_port = split_host_port(settings.worker_metrics_advertise)
        return join_host_port(host, announced_port or port)
    return join_host_port(advertised_host(settings), port)


def advertised_host(settings: Settings) -> str:
    """The address the endpoint listens on, or when it listens on every interface, this host's
    address on the way to Redis (in compose: the container's): to the first Sentinel with
    Sentinel (REDIS_HOST is then unused, and likely loopback), else to the queue's Redis."""
    host = settings.worker_metrics_host
    if host not in ANY_ADDRESS:
        return host
    target = (
        settings.sentinels[0] if settings.sentinels else (settings.redis_host, settings.redis_port)
    )
    # 0.0.0.0 listens on IPv4 only; `::` and "" on both families.
    family = socket.AF_INET if host == "0.0.0.0" else socket.AF_UNSPEC
    return source_address(target, family) or socket.gethostname()


def source_address(target: tuple[str, int], family: int = socket.AF_UNSPEC) -> str | None:
    """This host's address on the route to `target` (the first of its addresses that has a
    route), or None when there is none."""
    try:
        found = socket.getaddrinfo(*target, family=family, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for address_family, kind, protocol, _, address in found:
        try:
            # Connecting a UDP socket sends nothing: it only picks the outgoing interface.
            with socket.socket(address_family, kind, protocol) as probe:
                probe.connect(address)
                source: str = probe.getsockname()[0]
                return source
        except OSError:
            continue
    return None
