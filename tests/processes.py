"""Real ``tpv-broker`` processes in tests: wait until one serves, stop one
as systemd would (SIGTERM, then SIGKILL after a grace period)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

CLI = [sys.executable, "-m", "tpv_broker"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the developer's own TPV_BROKER_* settings
    (nothing from the shell may change the config under test) or a
    Prometheus multiprocess directory, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TPV_BROKER_", "PROMETHEUS_"))}
    env.update(extra)
    return env


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    # A bound on waiting, not an assertion on speed.
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def wait_until_serving(proc: subprocess.Popen, base: str, log: Path | None = None) -> None:
    """Until ``base``/health answers 200; fails at once (with the log) if the
    process exits first."""

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"tpv-broker serve exited early: {log.read_text() if log else ''}")
        try:
            return requests.get(f"{base}/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, f"tpv-broker serve to answer {base}/health")


def stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def serving(config: Path, logs: Path, workers: int = 2) -> Iterator[str]:
    """``tpv-broker serve`` with ``config`` under gunicorn on a free port,
    its stderr in ``logs``/err.log; yields its base URL once it answers,
    stops it as systemd would on the way out."""
    from tpv_broker.devtools.servers import free_port

    port = free_port()
    log = logs / "err.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([*CLI, "--config", str(config), "serve", "--bind", f"127.0.0.1:{port}",
                                 "--workers", str(workers)], env=clean_env(), stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base, log)
        yield base
    finally:
        stop(proc)
