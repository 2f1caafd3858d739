"""Run the whole system locally, on demo data: ``./scripts/run-local.sh``.

Starts a throw-away redis-server and influxd (state under ``<repo>/.local/demo/``,
wiped at every start), writes metrics for a dozen made-up destinations in the
schemas Galaxy sites really produce (gxadmin's ``queue_by_destination`` and
``destination-queue-run-time``, pulsar-util's ``htcondor_cluster_usage`` in
its old format), keeps writing new points from a feeder thread so queues grow
and drain and free cores move, then runs the collector and the rank API as
they run in production (``tpv-broker collect`` and ``tpv-broker serve``).
Once the API is ready it sends one sample rank request and prints the answer
as one line per candidate (its place, score and reason; ``--json``: the
request and answer as JSON), writes the running system's settings to
``.local/demo/env`` for ``tpv-broker`` in another shell (``source`` it), and
tells how to poke at the running system. Ctrl-C stops it all.

The metrics are a deterministic function of ``--seed``: the same seed gives
the same points (only the timestamps follow the clock).

``--exit-after-sample`` stops everything right after the sample answer, for
tests and CI.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import requests

from tpv_broker.cli.commands import answer_lines
from tpv_broker.config.settings import CONFIG_ENV, ENV_PREFIX, BrokerConfig, load_config
from tpv_broker.errors import BrokerError
from tpv_broker.wording import counted

from .demo_metrics import DemoMetrics, sample_request
from .servers import InfluxServer, RedisServer, ServerError, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"
STATE_DIR = REPO_ROOT / ".local" / "demo"
# Outside STATE_DIR: the folder is wiped at start, and the lock must survive that.
LOCK_FILE = REPO_ROOT / ".local" / "demo.lock"
DATABASE = "galaxy"
COLLECTOR_INTERVAL_S = 5
# The environment the demo's collector and API run with, to `source` in
# another shell: there `tpv-broker inspect` finds the running system.
ENV_FILE_NAME = "env"
# The environment overrides the demo's children get (besides TPV_BROKER_CONFIG).
DEMO_SETTINGS = ("TPV_BROKER_REDIS_URL", "TPV_BROKER_INFLUXDB_URL", "TPV_BROKER_INFLUXDB_DATABASE",
                 "TPV_BROKER_COLLECTOR_INTERVAL_S", "TPV_BROKER_COLLECTOR_BATCH_WINDOW_S")

_STOP_GRACE_S = 10.0
_HTTP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 30


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------
class DemoError(Exception):
    """The demo could not start or lost a component; the message says which."""


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"--- {path}: not written ---"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- last lines of {path} ---\n{tail or '(empty)'}"


def _broker_command() -> list[str]:
    entry = Path(sys.executable).parent / "tpv-broker"
    if entry.is_file() and os.access(entry, os.X_OK):
        return [str(entry)]
    # tpv_broker.cli has no __main__ block: `python -m tpv_broker.cli` would
    # exit 0 without doing anything.
    return [sys.executable, "-c", "import sys; from tpv_broker.cli import main; sys.exit(main())"]


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn that makes a child get SIGTERM when the demo dies, even
    by SIGKILL, so a killed demo cannot leave a collector or API behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def _process_dir(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _reap_leftovers(state_dir: Path) -> list[str]:
    """Stop what a demo killed with SIGKILL left behind (servers run in
    sessions of their own and survive it). Only pids it recorded, and only
    if they still run inside its state folder: a pid may have been reused."""
    try:
        recorded = json.loads((state_dir / "pids.json").read_text())
    except (OSError, ValueError):
        return []
    stopped = []
    for name, pid in recorded.items() if isinstance(recorded, dict) else ():
        cwd = _process_dir(pid) if isinstance(pid, int) else None
        if cwd is None or not cwd.is_relative_to(state_dir):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + _STOP_GRACE_S
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stopped.append(f"{name} (pid {pid})")
    return stopped


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_STOP_GRACE_S)
        # The child leads its own process group (gunicorn's workers are in
        # it too): nothing of it may outlive the demo.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _is_running(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


class Feeder:
    """Writes the next step of the demo metrics every ``interval_s``."""

    def __init__(
        self,
        metrics: DemoMetrics,
        write: Callable[[list[str]], None],
        interval_s: float,
        log_path: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics, self.write, self.interval_s = metrics, write, interval_s
        self.log_path, self.clock = log_path, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=_HTTP_TIMEOUT_S + 1)

    def _run(self) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            while not self._stop.wait(self.interval_s):
                lines = self.metrics.step(self.clock())
                try:
                    self.write(lines)
                except ServerError as e:
                    # influxd going away is reported by the main loop; the
                    # feeder carries on in case it was a hiccup.
                    log.write(f"{time.strftime('%H:%M:%S')} step {self.metrics.steps - 1}: write failed: {e}\n")
                else:
                    log.write(describe_step(self.metrics, len(lines)) + "\n")
                log.flush()


def describe_step(metrics: DemoMetrics, n_lines: int) -> str:
    counts = metrics.queue_counts()
    queued = " ".join(f"{d}={n}" for (d, s), n in counts.items() if s == "queued" and n)
    free = " ".join(f"{d}={n}" for d, n in metrics.free_cpus().items())
    offline = ", ".join(metrics.offline_sites()) or "none"
    return (
        f"{time.strftime('%H:%M:%S')} step {metrics.steps - 1}: {n_lines} lines; queued: {queued or 'none'}; "
        f"free cores: {free}; offline: {offline}"
    )


def _shown_path(path: Path) -> str:
    """The path as short as a shell in the current folder can use it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def env_file_text(settings: Mapping[str, str], config_path: Path, bin_dir: Path | None, pid: int) -> str:
    """A file to ``source``: the settings the demo's collector and API run
    with, nothing else of TPV_BROKER_* (as the demo gives its children), and
    ``bin_dir`` (where ``tpv-broker`` is) first on PATH."""
    lines = [
        f"# The running demo's settings (scripts/run-local.sh, pid {pid}), for tpv-broker in another shell.",
        "# Removed when the demo stops. Sourcing it drops any other TPV_BROKER_* setting of the shell.",
        f"unset $(env | sed -n 's/^\\({ENV_PREFIX}[A-Za-z0-9_]*\\)=.*/\\1/p')",
        f"export {CONFIG_ENV}={shlex.quote(str(config_path))}",
        *(f"export {name}={shlex.quote(settings[name])}" for name in DEMO_SETTINGS),
    ]
    if bin_dir is not None:
        quoted = shlex.quote(str(bin_dir))
        lines.append(f'case ":$PATH:" in *:{quoted}:*) ;; *) export PATH={quoted}:"$PATH" ;; esac')
    return "\n".join(lines) + "\n"


def _size_shown(size: float) -> str:
    return f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / 2**20:g} MiB"


def request_lines(body: Mapping[str, Any]) -> list[str]:
    """A rank request in a few lines: the job, the candidates with their
    TPV scores in TPV's order, the input datasets."""
    job = body["job"]
    gpus = f", {job['gpus']:g} GPUs" if job.get("gpus") else ""
    lines = [(f"  job {job.get('id', '(no id)')}: {job['tool_id']}, {counted(job.get('cores', 1), 'core')}, "
              f"{job.get('mem', 0):g} GB{gpus}")]
    candidates = body["destinations"]
    scores = ", ".join(f"{d['id']} {d['tpv_score']:g}" if d.get("tpv_score") is not None else d["id"]
                       for d in candidates)
    lines.append(f"  {counted(len(candidates), 'candidate')} in TPV's order, with TPV's scores: {scores}")
    datasets = body.get("datasets") or []
    if datasets:
        shown = ", ".join(f"{_size_shown(d.get('size', 0))} in {d['object_store_id']}" for d in datasets)
        lines.append(f"  {counted(len(datasets), 'input dataset')}: {shown}")
    return lines


def rank_command(broker: str, body: Mapping[str, Any]) -> str:
    """``tpv-broker rank --explain`` for the job and candidates of a request
    (read-only: it charges nothing)."""
    job = body["job"]
    args = ["rank", "--explain", "--tool", job["tool_id"], "--cores", f"{job.get('cores', 1):g}",
            "--mem", f"{job.get('mem', 0):g}", *(d["id"] for d in body["destinations"])]
    return f"{broker} {shlex.join(args)}"


def _pretty(value: Any, indent: int = 0, used: int = 0, width: int = 110) -> str:
    """JSON, indented, but an object or list stays on one line when it fits
    there, and always from the fourth level down (explain's score terms):
    the answer then reads one candidate per screenful, one term per line.
    ``used`` is what the line already holds before the value."""
    flat = json.dumps(value)
    if not isinstance(value, (dict, list)) or not value or used + len(flat) <= width or indent >= 8:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            prefix = f"{pad}{json.dumps(k)}: "
            items.append(prefix + _pretty(v, indent + 2, len(prefix), width))
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _pretty(v, indent + 2, len(pad), width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


# --------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------
@dataclass
class Demo:
    config_path: Path
    seed: int
    feed_interval_s: float
    ready_timeout_s: float
    exit_after_sample: bool
    as_json: bool
    stop_requested: threading.Event
    received: list[int]
    state_dir: Path = STATE_DIR
    running: bool = False
    redis: RedisServer | None = None
    influx: InfluxServer | None = None
    children: list[_Child] = field(default_factory=list)
    feeder: Feeder | None = None
    _pids: dict[str, int] = field(default_factory=dict)

    def _say(self, text: str = "") -> None:
        print(text, flush=True)

    def _say_component(self, name: str, pid: int | None, detail: str) -> None:
        # tests/test_demo.py reads the pids from these lines.
        where = "thread" if pid is None else f"pid {pid}"
        self._say(f"  {name:<13} {where:<11} {detail}")

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise _Stopped(self.received[0] if self.received else signal.SIGTERM)

    def _record(self, name: str, pid: int) -> None:
        self._pids[name] = pid
        (self.state_dir / "pids.json").write_text(json.dumps(self._pids, indent=2) + "\n")

    def run(self) -> None:
        env = self._child_env_base()
        try:
            # Before anything is wiped or started: a typo must cost nothing.
            config = load_config(self.config_path, environ=env)
        except BrokerError as e:
            raise DemoError(str(e)) from None
        for leftover in _reap_leftovers(self.state_dir):
            self._say(f"stopped {leftover}, left behind by an earlier demo")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._say(f"TPV Broker demo; state and logs in {self.state_dir}")
        self._start_servers()
        self._check_stop()
        assert self.redis is not None and self.influx is not None
        env.update(
            TPV_BROKER_REDIS_URL=self.redis.url,
            TPV_BROKER_INFLUXDB_URL=self.influx.url,
            TPV_BROKER_INFLUXDB_DATABASE=DATABASE,
            TPV_BROKER_COLLECTOR_INTERVAL_S=str(COLLECTOR_INTERVAL_S),
            # gxadmin batches come every minute in production; here every few
            # seconds, so a group that vanished from the newest batch must
            # count as empty before the next batch arrives.
            TPV_BROKER_COLLECTOR_BATCH_WINDOW_S=f"{min(30.0, self.feed_interval_s / 2):g}",
        )
        metrics = self._write_initial_metrics(config)
        self._check_stop()
        self._write_env_file(env)

        api_port = free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        broker = _broker_command()
        config_args = ["--config", str(self.config_path)]
        collector = self._start_child("collector", [*broker, *config_args, "collect"], env)
        self._say_component("collector", collector.proc.pid, f"every {COLLECTOR_INTERVAL_S} s, log {collector.log}")
        # gunicorn (25+) puts a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl,
        # else ~/.gunicorn/gunicorn.ctl, taking it over from any other gunicorn
        # of the user: keep ours in the demo folder.
        api_env = {**env, "XDG_RUNTIME_DIR": str(self.state_dir)}
        serve = ["serve", "--bind", f"127.0.0.1:{api_port}", "--workers", "2"]
        api = self._start_child("API", [*broker, *config_args, *serve], api_env)
        self._say_component("API", api.proc.pid, f"{api_url}, log {api.log}")
        # Started after the children: preexec_fn is only safe without other threads.
        self.feeder = Feeder(metrics, self._write, self.feed_interval_s, self.state_dir / "feeder.log")
        self.feeder.start()
        self._say_component("feeder", None, f"new points every {self.feed_interval_s:g} s, log {self.feeder.log_path}")

        self._wait_ready(api_url, collector, api)
        self._sample(api_url, api)
        if self.exit_after_sample:
            return
        self._print_commands(api_url, broker)
        self.running = True
        self._say("\nRunning. Ctrl-C stops everything.")
        while not self.stop_requested.wait(0.5):
            self._check_alive()
        self._check_stop()

    def _child_env_base(self) -> dict[str, str]:
        # The demo's servers, not whatever a developer's shell points at.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TPV_BROKER_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start_servers(self) -> None:
        self.redis = RedisServer(self.state_dir / "redis")
        self.redis.start()
        assert self.redis.proc is not None
        self._record("redis-server", self.redis.proc.pid)
        self._say_component("redis-server", self.redis.proc.pid, self.redis.url)
        self._check_stop()
        self.influx = InfluxServer(self.state_dir / "influxdb")
        self.influx.start()
        assert self.influx.proc is not None
        self._record("influxd", self.influx.proc.pid)
        self.influx.create_database(DATABASE)
        self._say_component("influxd", self.influx.proc.pid, f"{self.influx.url}, database {DATABASE}")

    @property
    def env_file(self) -> Path:
        return self.state_dir / ENV_FILE_NAME

    def _write_env_file(self, env: Mapping[str, str]) -> None:
        entry = Path(sys.executable).parent / "tpv-broker"
        bin_dir = entry.parent if entry.is_file() and os.access(entry, os.X_OK) else None
        self.env_file.write_text(env_file_text(env, self.config_path, bin_dir, os.getpid()))

    def _write(self, lines: list[str]) -> None:
        assert self.influx is not None
        if lines:
            self.influx.write_lines(DATABASE, lines, precision="s")

    def _write_initial_metrics(self, config: BrokerConfig) -> DemoMetrics:
        # pulsar-util reports the AMQP vhost, which the config lists as an
        # alias: write that, so the demo shows the alias mapping at work.
        reported = {dest_id: d.aliases[0] for dest_id, d in config.destinations.items() if d.aliases}
        metrics = DemoMetrics(self.seed, reported_ids=reported)
        lines = metrics.step(time.time())
        self._write(lines)
        self._say(f"Wrote {len(lines)} points for {len(metrics.sites)} destinations (seed {self.seed}):")
        known = [s.id for s in metrics.sites if s.id in config.destinations]
        extra = [s.id for s in metrics.sites if s.id not in config.destinations]
        self._say(f"  in {self.config_path.name}: {', '.join(known) or 'none'}; not in it: {', '.join(extra)}")
        aliases = [f"{reported[s.id]} -> {s.id}" for s in metrics.sites if s.id in reported and s.cluster_usage]
        if aliases:
            self._say(f"  pulsar-util reports {', '.join(aliases)} (config aliases)")
        notes = []
        for site in metrics.sites:
            if site.offline is not None:
                down, every = (n * self.feed_interval_s for n in site.offline)
                notes.append(f"{site.id} is offline for {down:g} s of every {every:g} s, from the start")
            if site.gpus:
                notes.append(f"{site.id} has {site.gpus} GPUs")
            if not site.cluster_usage:
                notes.append(f"{site.id} runs no pulsar-util (queue figures only)")
        self._say("  " + "; ".join(notes))
        return metrics

    def _start_child(self, name: str, command: list[str], env: dict[str, str]) -> _Child:
        log = self.state_dir / f"{name.lower()}.log"
        with open(log, "ab") as out:
            # A session of its own: Ctrl-C in the terminal reaches only the
            # demo, which then stops everything in order.
            proc = subprocess.Popen(
                command,
                cwd=self.state_dir,  # lets _reap_leftovers recognise it
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        child = _Child(name, proc, log)
        self.children.append(child)
        self._record(name.lower(), proc.pid)
        return child

    def _components(self) -> list[tuple[str, Callable[[], bool], Path]]:
        out: list[tuple[str, Callable[[], bool], Path]] = []
        servers = (("redis-server", self.redis, "redis-server.log"), ("influxd", self.influx, "influxd.out"))
        for name, server, log_name in servers:
            if server is not None and server.proc is not None:
                out.append((name, _is_running(server.proc), server.workdir / log_name))
        for child in self.children:
            out.append((child.name, _is_running(child.proc), child.log))
        if self.feeder is not None:
            out.append(("feeder", self.feeder.is_alive, self.feeder.log_path))
        return out

    def _check_alive(self) -> None:
        for name, alive, log in self._components():
            if not alive():
                raise DemoError(f"the {name} stopped unexpectedly\n{_log_tail(log)}")

    def _wait_ready(self, api_url: str, collector: _Child, api: _Child) -> None:
        self._say("Waiting for the first snapshot (GET /ready) ...")
        started = time.monotonic()
        deadline = started + self.ready_timeout_s
        while True:
            self._check_stop()
            self._check_alive()
            try:
                resp = requests.get(f"{api_url}/ready", timeout=2)
            except requests.RequestException:
                last, blame = "the API does not answer", api.log
            else:
                if resp.status_code == 200:
                    body = resp.json()
                    self._say(
                        f"Ready after {time.monotonic() - started:.1f} s: snapshot of "
                        f"{body.get('destinations')} destinations, {body.get('snapshot_age_s')} s old"
                    )
                    return
                try:
                    reason = resp.json().get("reason", resp.text)
                except ValueError:
                    reason = resp.text[:200]
                last = f"HTTP {resp.status_code}: {reason}"
                # 503 = the API runs but has no fresh snapshot: the collector's fault.
                blame = collector.log if resp.status_code == 503 else api.log
            if time.monotonic() >= deadline:
                raise DemoError(
                    f"GET {api_url}/ready did not answer 200 within {self.ready_timeout_s:g} s "
                    f"(last: {last})\n{_log_tail(blame)}"
                )
            self.stop_requested.wait(0.25)

    def _sample(self, api_url: str, api: _Child) -> None:
        body = sample_request()
        (self.state_dir / "sample-request.json").write_text(json.dumps(body, indent=2) + "\n")
        url = f"{api_url}/api/rank?explain=1"
        if self.as_json:
            self._say(f"\nSample rank request: POST {url}")
            self._say(_pretty(body))
        else:
            self._say(f"\nSample rank request (body in {_shown_path(self.state_dir / 'sample-request.json')}): "
                      f"POST {url}")
            for line in request_lines(body):
                self._say(line)
        started = time.monotonic()
        try:
            resp = requests.post(url, json=body, timeout=_HTTP_TIMEOUT_S)
        except requests.RequestException as e:
            raise DemoError(f"POST {url} failed: {e}\n{_log_tail(api.log)}") from None
        elapsed_ms = (time.monotonic() - started) * 1000
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if resp.status_code != 200 or not isinstance(answer, dict):
            raise DemoError(
                f"POST {url} answered HTTP {resp.status_code}: {resp.text[:500]}\n"
                + _log_tail(api.log)
            )
        if self.as_json:
            self._say(f"\nAnswer (HTTP {resp.status_code}, {elapsed_ms:.0f} ms):")
            self._say(_pretty(answer))
            return
        header, *lines = answer_lines(answer)
        self._say(f"\nAnswer (HTTP {resp.status_code}, {elapsed_ms:.0f} ms): {header}")
        for line in lines:
            self._say(line)

    def _print_commands(self, api_url: str, broker: list[str]) -> None:
        assert self.influx is not None
        # After `source`, tpv-broker is on PATH when the demo runs from a venv with it.
        cli = "tpv-broker" if broker[0].endswith("/tpv-broker") else shlex.join(broker)
        request_file = shlex.quote(_shown_path(self.state_dir / "sample-request.json"))
        query = 'SELECT last("count") FROM "queue_by_destination" GROUP BY "destination_id", "state"'
        commands = [
            f"source {shlex.quote(_shown_path(self.env_file))}  # the demo's settings, for tpv-broker",
            f"{cli} inspect  # what Redis holds: per destination its figures, score and age",
            f"{rank_command(cli, sample_request())}  # read-only",
            f"watch -n {COLLECTOR_INTERVAL_S} {cli} inspect  # queues move, sites go and come back",
            f"{cli} collect --once  # one cycle; publishes only if no collector holds the lease (the demo's does)",
            f"curl -s -H 'Content-Type: application/json' --data @{request_file} '{api_url}/api/rank?explain=1'",
            f"curl -s {api_url}/metrics | grep ^tpv_broker_  # Prometheus metrics",
            (f"curl -sG {self.influx.url}/query --data-urlencode db={DATABASE} "
             f"--data-urlencode {shlex.quote('q=' + query)}"),
        ]
        self._say(f"\nIn a browser: {api_url}/ (status page), {api_url}/docs (API docs)")
        self._say("\nTry, in another shell, while this runs:")
        for command in commands:
            self._say(f"  {command}")

    def stop_all(self) -> None:
        """Stops whatever was started, newest first; safe to call at any point."""
        parts: list[tuple[str, Callable[[], None]]] = [(c.name, c.stop) for c in reversed(self.children)]
        if self.feeder is not None:
            parts.append(("feeder", self.feeder.stop))
        if self.influx is not None:
            parts.append(("influxd", self.influx.stop))
        if self.redis is not None:
            parts.append(("redis-server", self.redis.stop))
        if not parts:
            return
        _print_if_possible("Stopping:", end="")
        for name, stop in parts:
            _print_if_possible(f" {name}", end="")
            stop()
        self.children.clear()
        self.feeder = self.influx = self.redis = None
        (self.state_dir / "pids.json").unlink(missing_ok=True)
        # Settings of servers that are gone would only mislead.
        self.env_file.unlink(missing_ok=True)
        _print_if_possible(". Stopped.")


def _print_if_possible(text: str, end: str = "\n") -> None:
    # Clean-up must go on when stdout is gone (closed pipe, closed terminal).
    with contextlib.suppress(OSError):
        print(text, end=end, flush=True)


def _lock(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Returned open on purpose: the flock lasts as long as the handle, i.e. the demo.
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - see above
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise DemoError(f"another demo (pid {holder}) is running from this checkout; stop it first") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _positive_interval(text: str) -> float:
    value = float(text)
    # Points are stamped in whole seconds; faster feeding would overwrite them.
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 1 and 3600 seconds")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run-local.sh",
        description="Run redis-server, influxd, the collector and the rank API locally on demo metrics.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config.yaml (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the demo metrics (default: %(default)s)")
    parser.add_argument(
        "--feed-interval",
        type=_positive_interval,
        default=5.0,
        metavar="SECONDS",
        help="write new metric points this often (default: %(default)g)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up if the API is not ready within this time (default: %(default)g)",
    )
    parser.add_argument(
        "--exit-after-sample",
        action="store_true",
        help="stop everything right after the sample answer (for tests and CI)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the sample request and answer as JSON instead of one line per candidate",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    stop_requested = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # No printing and no raising here: an exception could land inside the
        # clean-up itself. The main loop notices the event within 0.5 s.
        received.append(signum)
        stop_requested.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    demo = Demo(
        config_path=args.config.resolve(),
        seed=args.seed,
        feed_interval_s=args.feed_interval,
        ready_timeout_s=args.ready_timeout,
        exit_after_sample=args.exit_after_sample,
        as_json=args.json,
        stop_requested=stop_requested,
        received=received,
    )
    lock: IO[str] | None = None
    try:
        lock = _lock(LOCK_FILE)
        demo.run()
        return 0
    except _Stopped as e:
        print(f"\n{signal.Signals(e.signum).name} received.", flush=True)
        # A stop asked for while running is the normal way out; during
        # start-up it means the demo never came up.
        return 0 if demo.running else 128 + e.signum
    except (DemoError, ServerError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except BrokenPipeError:
        # Whoever read our output has gone (`... | head`): stop quietly, and
        # keep the interpreter's final flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        demo.stop_all()
        if lock is not None:
            lock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
