"""Throw-away ``redis-server`` and ``influxd`` processes for tests and local demos.

Each server runs on free loopback ports with all of its state in one
directory, so several can run next to a system-wide Redis or InfluxDB (or next
to each other) without touching them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "InfluxServer",
    "RedisServer",
    "ServerError",
    "free_port",
    "influxql_inserts_to_lines",
]

_HOST = "127.0.0.1"
# Per-request limit for the helper HTTP calls: a paused or wedged influxd must
# make a test fail, not hang the whole session.
_HTTP_TIMEOUT = 10.0
_STOP_GRACE = 5.0
_LOG_TAIL_LINES = 40
# A port picked by free_port() can be taken by someone else before the server
# binds it; retrying with fresh ports makes that race harmless.
_BIND_ATTEMPTS = 3
# Debian installs some daemons under sbin, which is not on every user's PATH.
_EXTRA_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ServerError(RuntimeError):
    """A development server could not be found, started or talked to."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


_DEBIAN_PACKAGE = {"redis-server": "redis-server", "influxd": "influxdb"}


def _find_binary(name: str) -> str:
    path = os.environ.get("PATH", "")
    found = shutil.which(name, path=f"{path}{os.pathsep}{_EXTRA_PATH}" if path else _EXTRA_PATH)
    if found is None:
        raise ServerError(
            f"{name} not found on PATH: install the Debian package "
            f"{_DEBIAN_PACKAGE[name]} (scripts/bootstrap.sh does)"
        )
    return found


def _tail(paths: list[pathlib.Path], lines: int = _LOG_TAIL_LINES) -> str:
    chunks = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        chunks.append(f"--- {path} ---\n{tail or '(empty)'}")
    return "\n".join(chunks) or "(no log written)"


def _quote(value: str) -> str:
    # A JSON string is also a valid TOML basic string and a valid quoted
    # argument in redis.conf, so paths with spaces or quotes survive both;
    # redis.conf knows no \uXXXX escapes, hence raw UTF-8.
    return json.dumps(value, ensure_ascii=False)


# Servers started and not yet stopped, so a crashed test run or a demo script
# that forgets stop() does not leave daemons behind on the machine. Keyed by id()
# because dataclasses with eq=True are unhashable.
_running: dict[int, _ManagedServer] = {}


def _stop_all_running() -> None:
    for server in list(_running.values()):
        # The interpreter is exiting: stop what we can.
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_running)


@dataclass
class _ManagedServer:
    """Process handling shared by the two servers."""

    workdir: pathlib.Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    _name: ClassVar[str] = "server"
    # Every port attribute, so auto-chosen ones never land on a fixed one.
    _port_names: ClassVar[tuple[str, ...]] = ("port",)

    @property
    def _log_paths(self) -> list[pathlib.Path]:
        return [self.workdir / f"{self._name}.out"]

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files for the chosen ports before each launch attempt."""

    def _ready(self) -> bool:
        raise NotImplementedError

    def _auto_ports(self) -> list[str]:
        """Names of the port attributes this server should choose itself."""
        return [] if self.port else ["port"]

    def _choose_ports(self, names: list[str]) -> None:
        taken = {getattr(self, n) for n in self._port_names if n not in names}
        for name in names:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            setattr(self, name, port)

    def start(self, timeout: float = 10.0) -> Self:
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError(
                f"{self._name} in {self.workdir} is already running (pid {self.proc.pid})"
            )
        self.workdir = pathlib.Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = self._command()  # fails early, before any port is chosen
        auto = self._auto_ports()
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            self._choose_ports(auto)
            # Logs of an earlier run or attempt would make the tail in an error
            # message (and the port-collision check below) misleading.
            for path in self._log_paths:
                path.unlink(missing_ok=True)
            self._prepare()
            self._launch(command)
            try:
                self._wait_ready(timeout)
                return self
            except ServerError as exc:
                self.stop()
                log = _tail(self._log_paths)
                lost_race = "address already in use" in log.lower() and any(
                    f":{getattr(self, name)}" in log for name in auto
                )
                if lost_race and attempt < _BIND_ATTEMPTS:
                    continue
                raise ServerError(f"{exc}\n{log}") from None
        raise AssertionError("unreachable")

    def _launch(self, command: list[str]) -> None:
        env = self._child_env()
        with open(self.workdir / f"{self._name}.out", "ab") as out:
            # A new session keeps Ctrl-C in the terminal from reaching the
            # daemon directly, so it is stopped by our teardown, in order.
            self.proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _running[id(self)] = self

    def _child_env(self) -> dict[str, str]:
        return dict(os.environ)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self._name} exited with status {self.proc.returncode} during start-up "
                    f"(port {self.port}, workdir {self.workdir})"
                )
            if self._ready():
                return
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"{self._name} did not answer on port {self.port} within {timeout:g} s "
                    f"(workdir {self.workdir})"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        _running.pop(id(self), None)
        proc = self.proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                proc.wait()
            return
        # SIGTERM to a SIGSTOPped process stays pending until it is continued,
        # so a server left paused by a failed test would otherwise eat the whole
        # grace period and then be killed without a clean shutdown.
        self._signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """Freeze the process: its port still accepts connections but nothing answers."""
        self._signal(signal.SIGSTOP, required=True)
        # The stop is delivered asynchronously: on a busy machine a thread of
        # the server could still answer a request sent right after the kill.
        self._wait_state(stopped=True)

    def resume(self) -> None:
        self._signal(signal.SIGCONT, required=True)
        self._wait_state(stopped=False)

    def _wait_state(self, stopped: bool, timeout_s: float = 5.0) -> None:
        """Until the kernel reports the process stopped (or running again);
        at once where /proc does not say."""
        assert self.proc is not None
        stat = pathlib.Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                # The state follows the command name's closing parenthesis.
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if (state in ("T", "t")) == stopped:
                return
            time.sleep(0.005)
        raise ServerError(f"{self._name} in {self.workdir} did not {'stop' if stopped else 'resume'} "
                          f"within {timeout_s:g} s")

    def _signal(self, sig: signal.Signals, required: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            if required:
                raise ServerError(f"{self._name} in {self.workdir} is not running")
            return
        self.proc.send_signal(sig)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _require_port(self) -> int:
        if not self.port:
            raise ServerError(f"{self._name} has no port yet: call start() first")
        return self.port


@dataclass
class RedisServer(_ManagedServer):
    """A ``redis-server`` without persistence, listening on 127.0.0.1 only."""

    _name: ClassVar[str] = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self._require_port()}/0"

    @property
    def _log_paths(self) -> list[pathlib.Path]:
        # Config errors go to stderr before the logfile is opened.
        return [self.workdir / "redis-server.log", self.workdir / f"{self._name}.out"]

    def start(self, timeout: float = 10.0) -> Self:
        return super().start(timeout)

    def _command(self) -> list[str]:
        return [_find_binary("redis-server"), str(self.workdir / "redis.conf")]

    def _prepare(self) -> None:
        # A config file rather than arguments: `save ""` survives no argv quoting.
        conf = "\n".join(
            [
                f"port {self.port}",
                f"bind {_HOST}",
                'save ""',
                "appendonly no",
                f"dir {_quote(str(self.workdir))}",
                f"logfile {_quote(str(self.workdir / 'redis-server.log'))}",
                "daemonize no",
                "",
            ]
        )
        (self.workdir / "redis.conf").write_text(conf)

    def _ready(self) -> bool:
        try:
            with redis.Redis(
                host=_HOST,
                port=self.port,
                socket_connect_timeout=0.5,
                socket_timeout=0.5,
                # redis-py retries by default, which turns one probe into
                # seconds and lets the start-up deadline overrun.
                retry=Retry(NoBackoff(), 0),
            ) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False


@dataclass
class InfluxServer(_ManagedServer):
    """An InfluxDB 1.x ``influxd`` with its HTTP API on 127.0.0.1 and no auth."""

    _name: ClassVar[str] = "influxd"
    _rpc_port: int = field(default=0, init=False, repr=False)
    _port_names: ClassVar[tuple[str, ...]] = ("port", "_rpc_port")

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self._require_port()}"

    def start(self, timeout: float = 30.0) -> Self:
        return super().start(timeout)

    def _auto_ports(self) -> list[str]:
        # The RPC (backup/restore) port is always ours to choose: its default
        # 8088 collides with any other influxd on the machine.
        return [*super()._auto_ports(), "_rpc_port"]

    def _command(self) -> list[str]:
        return [_find_binary("influxd"), "-config", str(self.workdir / "influxdb.conf")]

    def _child_env(self) -> dict[str, str]:
        # influxd lets INFLUXDB_* variables override the config file, which
        # could move our server onto a user's real ports or data directories.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _prepare(self) -> None:
        w = self.workdir
        conf = f"""\
reporting-enabled = false
bind-address = {_quote(f"{_HOST}:{self._rpc_port}")}

[meta]
  dir = {_quote(str(w / "meta"))}

[data]
  dir = {_quote(str(w / "data"))}
  wal-dir = {_quote(str(w / "wal"))}
  query-log-enabled = false

[http]
  enabled = true
  bind-address = {_quote(f"{_HOST}:{self.port}")}
  auth-enabled = false
  log-enabled = false

[monitor]
  store-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""
        (w / "influxdb.conf").write_text(conf)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except requests.RequestException:
            return False

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        """Run InfluxQL via POST /query; any statement error raises ServerError."""
        data = {"q": q} if db is None else {"q": q, "db": db}
        try:
            resp = requests.post(f"{self.url}/query", data=data, timeout=_HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise ServerError(f"influxd query {q!r} failed: {exc}") from exc
        if resp.status_code >= 400:
            raise ServerError(
                f"influxd query {q!r} failed with HTTP {resp.status_code}: {resp.text.strip()}"
            )
        body: dict[str, Any] = resp.json()
        errors = [r["error"] for r in body.get("results", []) if "error" in r]
        if "error" in body:
            errors.insert(0, body["error"])
        if errors:
            raise ServerError(f"influxd query {q!r} failed: {'; '.join(errors)}")
        return body

    def create_database(self, db: str) -> None:
        self.query(f"CREATE DATABASE {_quote_ident(db)}")

    def write_lines(self, db: str, lines: str | list[str], precision: str = "s") -> None:
        payload = lines if isinstance(lines, str) else "\n".join(lines)
        try:
            resp = requests.post(
                f"{self.url}/write",
                params={"db": db, "precision": precision},
                data=payload.encode("utf-8"),
                timeout=_HTTP_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise ServerError(f"influxd write to {db!r} failed: {exc}") from exc
        if resp.status_code != 204:
            raise ServerError(
                f"influxd write to {db!r} failed with HTTP {resp.status_code}: {resp.text.strip()}"
            )


def _quote_ident(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def influxql_inserts_to_lines(text: str, start_ts: int, step_s: int = 1) -> list[str]:
    """Turn InfluxQL ``INSERT <line protocol>`` statements into timestamped line protocol.

    Lines starting with ``--`` and blank lines are skipped. Each statement gets
    its own timestamp in seconds (``start_ts``, ``start_ts + step_s``, ...):
    points of one series with the same timestamp overwrite each other, so
    without this InfluxDB would keep only the last point of each series. The
    statements must not carry a timestamp of their own.
    """
    lines: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("--"):
            continue
        keyword, _, body = stripped.partition(" ")
        if keyword.upper() != "INSERT" or not body.strip():
            raise ValueError(
                f"line {lineno}: expected 'INSERT <line protocol>', got {stripped[:60]!r}"
            )
        body = body.strip()
        if body.split(" ", 1)[0].upper() == "INTO":
            # The retention policy would be silently lost on the /write path.
            raise ValueError(f"line {lineno}: 'INSERT INTO <retention policy>' is not supported")
        lines.append(f"{body} {start_ts + len(lines) * step_s}")
    return lines
