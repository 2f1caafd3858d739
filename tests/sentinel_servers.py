"""A Sentinel-managed Redis for tests: a password-protected master, a
replica and one ``redis-server --sentinel``, each on free loopback ports in
their own directory (built on devtools.servers)."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tpv_broker.devtools.servers import RedisServer, _find_binary, _ManagedServer, _quote

from .processes import wait_for

MASTER_NAME = "mymaster"


def _client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1,
                       socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


@dataclass
class DataNode(RedisServer):
    """A redis-server with a password, optionally a replica of ``master_port``."""

    password: str = "secret"
    master_port: int | None = None

    def _prepare(self) -> None:
        super()._prepare()
        lines = [f"requirepass {_quote(self.password)}", f"masterauth {_quote(self.password)}",
                 # Full syncs at once, not after the default 5 s wait.
                 "repl-diskless-sync-delay 0"]
        if self.master_port is not None:
            lines.append(f"replicaof 127.0.0.1 {self.master_port}")
        with open(self.workdir / "redis.conf", "a") as f:
            f.write("\n".join(lines) + "\n")

    def _ready(self) -> bool:
        try:
            with _client(self.port, self.password) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return _client(self.port, self.password)


@dataclass
class SentinelNode(_ManagedServer):
    master_port: int = 0
    password: str = "secret"
    quorum: int = 1
    extra: list[str] = field(default_factory=list)

    _name: ClassVar[str] = "redis-sentinel"

    @property
    def _log_paths(self) -> list[pathlib.Path]:
        return [self.workdir / "sentinel.log", self.workdir / f"{self._name}.out"]

    def _command(self) -> list[str]:
        # The Debian redis-server binary is a sentinel with --sentinel.
        return [_find_binary("redis-server"), str(self.workdir / "sentinel.conf"), "--sentinel"]

    def _prepare(self) -> None:
        conf = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {_quote(str(self.workdir))}",
            f"logfile {_quote(str(self.workdir / 'sentinel.log'))}",
            "daemonize no",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {self.quorum}",
            f"sentinel auth-pass {MASTER_NAME} {_quote(self.password)}",
            f"sentinel down-after-milliseconds {MASTER_NAME} 2000",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            *self.extra,
            "",
        ]
        (self.workdir / "sentinel.conf").write_text("\n".join(conf))

    def _ready(self) -> bool:
        try:
            with _client(self.port) as c:
                return c.sentinel_get_master_addr_by_name(MASTER_NAME) is not None
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return _client(self.port)

    def master_port_now(self) -> int:
        with self.client() as c:
            _, port = c.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def knows_replica(self, port: int) -> bool:
        with self.client() as c:
            replicas = c.sentinel_slaves(MASTER_NAME)
        return any(int(r["port"]) == port and not r.get("is_sdown") and not r.get("is_odown")
                   and r.get("master-link-status", "ok") == "ok" for r in replicas)


@contextlib.contextmanager
def sentinel_group(base: pathlib.Path, password: str) -> Iterator[tuple[DataNode, DataNode, SentinelNode]]:
    """A master, its replica in sync, and a sentinel that knows both;
    stopped on leaving."""
    master = DataNode(base / "master", password=password).start()
    replica = DataNode(base / "replica", password=password, master_port=master.port)
    sentinel = SentinelNode(base / "sentinel", password=password)
    try:
        replica.start()
        wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", "the replica to sync")
        sentinel.master_port = master.port
        sentinel.start()
        wait_for(lambda: sentinel.knows_replica(replica.port), "the sentinel to know the replica")
        yield master, replica, sentinel
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()
