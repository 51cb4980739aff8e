"""A Redis master, its replicas and three Sentinels on loopback ports, for the failover tests.

Each server runs in a temporary directory of its own and is stopped by pid, as the servers of
tests/processes.py are. The waits ask the Sentinels and the servers themselves (SENTINEL
master, ROLE) with a deadline, so that a test starts only once a failover could succeed and
knows when one has happened.
"""

import secrets
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import redis

from tests.processes import RedisServer, wait_for

HOST = "127.0.0.1"
MASTER_NAME = "jobcache"
QUORUM = 2
SENTINELS = 3
DOWN_AFTER_MILLISECONDS = 5000
"""How long a server must leave a Sentinel's PINGs unanswered to look down to it: the compose
file's value. Not shorter: right after a failover each Sentinel opens new links to the new
master, and for 5 s the other Sentinels' "down" votes on the old master still count towards a
quorum on the new one (Sentinel drops a vote only 5 s after its last answer), so a single
Sentinel that got no PING answer within 1 s (seen on this busy 2-core machine) failed over a
healthy new master, to the killed master that had just been restarted as its replica."""
FAILOVER_TIMEOUT_MILLISECONDS = 5000
"""Sentinel's failover-timeout: a failover that has not promoted a replica by then is given
up, and the next is tried after twice this (after a split vote, say)."""
SETTLE_TIMEOUT = 30.0
"""Sentinels find each other through hello messages every 2 s, and the replicas through the
master's INFO, which they ask for every 10 s: a setup is ready within a few of those."""

Address = tuple[str, int]


class SentinelServer(RedisServer):
    """One Sentinel: `redis-server <conf> --sentinel` on a port of its own, with a writable
    configuration file in its own directory (a Sentinel rewrites it as its view changes)."""

    def __init__(
        self,
        directory: str,
        master: RedisServer,
        master_name: str,
        password: str | None,
    ) -> None:
        # The parent's password is the one clients give this Sentinel (REDIS_SENTINEL_PASSWORD).
        super().__init__(directory, password, appendonly=False)
        assert master.password is not None, "the Sentinels authenticate to the servers"
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {self.directory}",
            "sentinel resolve-hostnames no",
            f"sentinel monitor {master_name} {master.host} {master.port} {QUORUM}",
            f"sentinel auth-pass {master_name} {master.password}",
            f"sentinel down-after-milliseconds {master_name} {DOWN_AFTER_MILLISECONDS}",
            f"sentinel failover-timeout {master_name} {FAILOVER_TIMEOUT_MILLISECONDS}",
            f"sentinel parallel-syncs {master_name} 1",
        ]
        if password is not None:
            # Also what this Sentinel gives the other Sentinels.
            lines.append(f"requirepass {password}")
        self.configuration = self.directory / "sentinel.conf"
        self.configuration.write_text("\n".join(lines) + "\n")
        executable = self.command[0]
        self.command = [executable, str(self.configuration), "--sentinel"]


def without_replicaof(command: list[str]) -> list[str]:
    """A redis-server command line without its `--replicaof <host> <port>`, if it has one."""
    if "--replicaof" not in command:
        return command
    at = command.index("--replicaof")
    return command[:at] + command[at + 3 :]


class SentinelSetup:
    """A master, its replicas and three Sentinels monitoring it under `master_name`."""

    def __init__(
        self,
        master_name: str,
        servers: Sequence[RedisServer],
        sentinels: Sequence[SentinelServer],
        sentinel_password: str | None,
    ) -> None:
        self.master_name = master_name
        self.servers = list(servers)
        """The Redis servers, the first started as the master; any of them may be it now."""
        self.sentinels = list(sentinels)
        self.sentinel_password = sentinel_password
        password = self.servers[0].password
        assert password is not None
        self.password = password

    @property
    def settings(self) -> dict[str, str]:
        """The jobcache variables that make a process find the master through the Sentinels."""
        settings = {
            "REDIS_SENTINELS": ",".join(f"{each.host}:{each.port}" for each in self.sentinels),
            "REDIS_SENTINEL_MASTER": self.master_name,
            "REDIS_PASSWORD": self.password,
        }
        if self.sentinel_password is not None:
            settings["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return settings

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        return self.sentinels[index].client()

    def master_address(self, index: int = 0) -> Address:
        """The master's address as Sentinel `index` reports it (SENTINEL
        get-master-addr-by-name)."""
        client = self.sentinel_client(index)
        try:
            host, port = client.sentinel_get_master_addr_by_name(self.master_name)
        finally:
            client.close()
        return str(host), int(port)

    def server_at(self, address: Address) -> RedisServer:
        for server in self.servers:
            if (server.host, server.port) == address:
                return server
        raise LookupError(f"no server of this setup at {address}")

    def master(self) -> RedisServer:
        """The server the Sentinels report as the master."""
        return self.server_at(self.master_address())

    def failover(self) -> Address:
        """SENTINEL FAILOVER on the first Sentinel: it promotes a replica at once, without
        asking the others; the old master's address."""
        old = self.master_address()
        client = self.sentinel_client()
        try:
            client.sentinel_failover(self.master_name)
        finally:
            client.close()
        return old

    def kill_master(self) -> RedisServer:
        """SIGKILL the master's process, as a crash does; the killed server, for `restart`."""
        server = self.master()
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        return server

    def restart(self, server: RedisServer) -> None:
        """Start a killed server again on its port, empty (nothing is persisted), as a replica
        of the current master: what an operator or a supervisor must do with a Redis that keeps
        no data. Started as a master, it would be an empty master until the Sentinels convert
        it (about 8 s), and a new master that looked down to them meanwhile could be failed over
        to it, the whole data set then copied from the empty server: seen once in CI."""
        assert server.process is not None and server.process.poll() is not None, "still running"
        host, port = self.master_address()
        server.command = [*without_replicaof(server.command), "--replicaof", host, str(port)]
        server.start()

    def wait_for_new_master(self, old: Address, timeout: float) -> Address:
        """Wait until every Sentinel reports the same master, not `old`, and that server says it
        is a master; its address."""

        def promoted() -> Address | None:
            addresses = {self._reported_master(index) for index in range(len(self.sentinels))}
            if len(addresses) != 1:
                return None
            [address] = addresses
            if address is None or address == old:
                return None
            return address if role_of(self.server_at(address))[0] == "master" else None

        return wait_for(promoted, timeout, interval=0.1, what=f"a master other than {old}")

    def wait_settled(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until the Sentinels could fail over: every running server but the master is a
        connected replica of it, and each Sentinel sees the master up, the two other Sentinels
        and every one of those replicas up (so that a failover reconfigures them all)."""
        wait_for(self._settled, timeout, interval=0.1, what="the Sentinel setup settles")

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Wait until every connected replica has acknowledged what the master had written when
        this was called (its offset): a failover now loses nothing written before."""
        master = self.master()
        reported = role_of(master)
        offset = int(reported[1])

        def acknowledged() -> bool:
            replicas = role_of(master)[2]
            return bool(replicas) and all(int(replica[2]) >= offset for replica in replicas)

        wait_for(acknowledged, timeout, what=f"replicas reach offset {offset}")

    def _reported_master(self, index: int) -> Address | None:
        try:
            return self.master_address(index)
        except redis.RedisError:
            return None

    def _settled(self) -> bool:
        try:
            address = self.master_address()
            master = self.server_at(address)
            if role_of(master)[0] != "master":
                return False
            others = [
                server for server in self.servers if server is not master and is_running(server)
            ]
            following = ["slave", master.host, master.port, "connected"]
            for server in others:
                role = role_of(server)
                if role[0] != "slave" or [*role[:2], int(role[2]), role[3]] != following:
                    return False
            replicas = {(server.host, server.port) for server in others}
            return bool(others) and all(
                self._sentinel_sees(index, address, replicas) for index in range(SENTINELS)
            )
        except redis.RedisError:
            return False

    def _sentinel_sees(self, index: int, master: Address, replicas: set[Address]) -> bool:
        """Whether Sentinel `index` sees `master` up as the master, the other Sentinels and
        every one of `replicas` up."""
        client = self.sentinel_client(index)
        try:
            state: dict[str, Any] = client.sentinel_master(self.master_name)
            known: list[dict[str, Any]] = client.sentinel_slaves(self.master_name)
        finally:
            client.close()
        if (state["ip"], int(state["port"])) != master or state["flags"] != "master":
            return False
        if state["num-other-sentinels"] != SENTINELS - 1 or state["num-slaves"] < 1:
            return False
        up = {
            (replica["ip"], int(replica["port"]))
            for replica in known
            if replica["flags"] == "slave" and replica["master-link-status"] == "ok"
        }
        return replicas <= up


def role_of(server: RedisServer) -> list[Any]:
    """The server's answer to ROLE: ["master", offset, [[host, port, offset], ...]] or
    ["slave", master host, master port, link state, offset]."""
    client = server.client()
    try:
        role: list[Any] = client.execute_command("ROLE")
    finally:
        client.close()
    return role


def is_running(server: RedisServer) -> bool:
    return server.process is not None and server.process.poll() is None


@contextmanager
def sentinel_setup(
    *,
    replicas: int = 1,
    master_name: str = MASTER_NAME,
    sentinel_password: str | None = None,
    timeout: float = SETTLE_TIMEOUT,
) -> Iterator[SentinelSetup]:
    """A master and `replicas` replicas (the same password for clients and for replication, no
    persistence), and three Sentinels monitoring the master with a quorum of two and declaring
    it down after DOWN_AFTER_MILLISECONDS; yielded once the Sentinels could fail it over. Every
    process is stopped by pid and every directory removed on exit."""
    password = f"sentinel-test-{secrets.token_hex(8)}"
    with ExitStack() as stack:

        def directory(prefix: str) -> str:
            return stack.enter_context(tempfile.TemporaryDirectory(prefix=f"jobcache-{prefix}-"))

        def started(server: RedisServer) -> RedisServer:
            # Registered before the start, so that a start that fails half-way still stops it.
            stack.callback(server.stop)
            server.start()
            return server

        replication = ["--masterauth", password]
        master = started(RedisServer(directory("master"), password, False, replication))
        replicas_of = [*replication, "--replicaof", master.host, str(master.port)]
        servers = [master] + [
            started(RedisServer(directory("replica"), password, False, replicas_of))
            for _ in range(replicas)
        ]
        # The Sentinels learn of the replicas from the master: let it know them all first.
        wait_for(
            lambda: len(role_of(master)[2]) == replicas,
            timeout,
            what=f"{replicas} replicas connect to the master",
        )
        sentinels = [
            SentinelServer(directory("sentinel"), master, master_name, sentinel_password)
            for _ in range(SENTINELS)
        ]
        for sentinel in sentinels:
            started(sentinel)
        setup = SentinelSetup(master_name, servers, sentinels, sentinel_password)
        setup.wait_settled(timeout)
        yield setup
