"""Fixtures for mapping jobs inside the real TPV (``total-perspective-vortex``
with ``galaxy-app``), in .venv-tpv, which holds TPV, Galaxy and the client but
not the service.

The live broker (a real redis-server with a snapshot and ``tpv-broker
serve``, on free loopback ports) runs as a subprocess of the main venv's
Python: tests_tpv/broker_harness.py. Stand-ins for broken brokers (500,
garbage) are the main suite's tests/fake_broker.py, which needs only the
standard library.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tpv"
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"
# Start-up takes a few seconds (gunicorn, Redis); a command a few more.
HARNESS_TIMEOUT_S = 60.0

sys.path.insert(0, str(ROOT / "tests"))  # for fake_broker, and only it

import fake_broker  # noqa: E402


class LiveBroker:
    """The harness process, driven line by line."""

    def __init__(self, workdir: Path) -> None:
        if not MAIN_PYTHON.exists():
            pytest.fail(f"{MAIN_PYTHON} missing: run scripts/bootstrap.sh first", pytrace=False)
        self.log = workdir / "harness.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(MAIN_PYTHON), str(Path(__file__).with_name("broker_harness.py")), str(workdir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        urls = json.loads(self._next_line("start-up"))
        self.url: str = urls["api"]
        self.state = "running"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def _next_line(self, what: str) -> str:
        try:
            line = self._lines.get(timeout=HARNESS_TIMEOUT_S)
        except queue.Empty:
            line = None
        if line is None:
            pytest.fail(f"broker harness gave no answer to {what}; its log:\n{self.log.read_text()}", pytrace=False)
        return line

    def do(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self._next_line(command)
        if answer != "ok":
            pytest.fail(f"broker harness: {answer}; its log:\n{self.log.read_text()}", pytrace=False)
        self.state = {"stop": "stopped", "start": "running", "pause": "paused", "resume": "running"}[command]

    def make_running(self) -> None:
        if self.state == "paused":
            self.do("resume")
        elif self.state == "stopped":
            self.do("start")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="session")
def live_broker_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBroker]:
    broker = LiveBroker(tmp_path_factory.mktemp("broker"))
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def live_broker(live_broker_process: LiveBroker) -> Iterator[LiveBroker]:
    """The live broker, running; left running after the test whatever it did."""
    live_broker_process.make_running()
    try:
        yield live_broker_process
    finally:
        live_broker_process.make_running()


@pytest.fixture
def fake() -> Iterator[fake_broker.FakeBroker]:
    with fake_broker.FakeBroker() as broker:
        yield broker


@pytest.fixture(autouse=True)
def fresh_tpv_and_client() -> Iterator[None]:
    """Each test starts with no cached TPV mapper and no client (so no
    breaker state) in this process, as a freshly started Galaxy would."""
    from tpv.rules import gateway

    import tpv_broker_client.client

    gateway.ACTIVE_DESTINATION_MAPPERS = {}
    tpv_broker_client.client._clients.clear()
    yield
    gateway.ACTIVE_DESTINATION_MAPPERS = {}
    tpv_broker_client.client._clients.clear()


@pytest.fixture
def tpv_configs(tmp_path: Path) -> Any:
    """``tpv_configs(url, **context)``: the example config, then a second file
    that points it at ``url`` (TPV merges ``global.context`` across files,
    later files winning), plus any extra YAML text."""

    def make(url: str, extra: str = "", **context: Any) -> list[str]:
        values = {"tpv_broker_url": url, **{f"tpv_broker_{k}": v for k, v in context.items()}}
        lines = ["global:", "  context:", *[f"    {k}: {json.dumps(v)}" for k, v in values.items()], extra]
        override = tmp_path / f"override-{len(list(tmp_path.glob('override-*')))}.yml"
        override.write_text("\n".join(lines) + "\n")
        return [str(EXAMPLE / "tpv_broker.yml"), str(override)]

    return make


@pytest.fixture(scope="session")
def galaxy_app() -> Any:
    from tpv.commands.test import mock_galaxy

    # create_model: Galaxy's job configuration asks the (in-memory) database
    # how to assign handlers, as `tpv dry-run` does.
    return mock_galaxy.App(job_conf=str(EXAMPLE / "job_conf.yml"), create_model=True)


@pytest.fixture
def map_job(galaxy_app: Any) -> Any:
    """``map_job(configs, tool_id="bwa", user=None, job=None)`` -> the Galaxy
    JobDestination TPV chose, through TPV's gateway as Galaxy calls it."""
    from tpv.commands.test import mock_galaxy
    from tpv.rules import gateway

    loaded: list[list[str]] = []

    def run(configs: list[str], tool_id: str = "bwa", user: Any = None, job: Any = None) -> Any:
        # TPV caches one mapper per referrer, whatever the files: reload on a change.
        if loaded[-1:] != [configs]:
            gateway.ACTIVE_DESTINATION_MAPPERS = {}
            loaded.append(configs)
        return gateway.map_tool_to_destination(
            galaxy_app, job or mock_galaxy.Job(), mock_galaxy.Tool(tool_id), user, tpv_config_files=configs
        )

    return run


def pytest_report_header(config: pytest.Config) -> str:
    import importlib.metadata as md

    packages = ("total-perspective-vortex", "galaxy-app", "tpv-broker-client")
    versions = ", ".join(f"{p} {md.version(p)}" for p in packages)
    return f"inside the real TPV: {versions}; python {sys.version.split()[0]} ({os.path.basename(sys.prefix)})"
