"""deploy/nginx/tpv-broker.conf in a real nginx, in front of a real
``tpv-broker serve`` on the real Redis of conftest.py.

The example is used as shipped except for two lines, rewritten to free
loopback ports: its ``listen`` and its upstream ``server``. Requests from
127.0.0.1 come from an address the example lets in (Galaxy handlers and
admins); requests bound to 127.0.0.2 (also loopback on Linux) from one it
does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from requests.adapters import HTTPAdapter

from tpv_broker.config.api_settings import ApiSettings
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .processes import clean_env, wait_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "nginx" / "tpv-broker.conf"
TPV_BROKER = Path(sys.executable).parent / "tpv-broker"
OUTSIDER = "127.0.0.2"


def nginx_binary() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("nginx not found: install the Debian package nginx (scripts/bootstrap.sh --tests does)",
                    pytrace=False)
    return found


def _replace_once(text: str, old: str, new: str) -> str:
    # The example must keep these lines: if it changes shape, this test
    # must notice rather than run nginx on something else.
    assert text.count(old) == 1, f"{old!r} expected once in {EXAMPLE}"
    return text.replace(old, new)


def site_config(api: int | Path, nginx_port: int) -> str:
    """The example, proxying to a port or (the alternative it names) a unix socket."""
    text = EXAMPLE.read_text()
    upstream = f"127.0.0.1:{api}" if isinstance(api, int) else f"unix:{api}"
    if not isinstance(api, int):
        assert "#   server unix:/run/tpv-broker/api.sock;" in text
    text = _replace_once(text, "    server 127.0.0.1:8000;\n", f"    server {upstream};\n")
    text = _replace_once(text, "    listen 8080;\n    listen [::]:8080;\n", f"    listen 127.0.0.1:{nginx_port};\n")
    return text


def main_config(tmp: Path, site: Path) -> Path:
    temp = {name: tmp / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for d in temp.values():
        d.mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""\
{"user root root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {site};
}}
""")
    return conf


def nginx_command(conf: Path, tmp: Path, *extra: str) -> list[str]:
    return [nginx_binary(), "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf), *extra]


def test_example_passes_nginx_t(tmp_path: Path) -> None:
    site = tmp_path / "tpv-broker.conf"
    site.write_text(site_config(free_port(), free_port()))
    result = subprocess.run(nginx_command(main_config(tmp_path, site), tmp_path, "-t"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_a_broken_example_fails_nginx_t(tmp_path: Path) -> None:
    # The check above can fail: nginx -t does reject a bad directive here.
    site = tmp_path / "tpv-broker.conf"
    site.write_text(site_config(free_port(), free_port()).replace("keepalive 16;", "keepalive sixteen;"))
    result = subprocess.run(nginx_command(main_config(tmp_path, site), tmp_path, "-t"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "keepalive" in result.stderr


# -- a live proxy ------------------------------------------------------------------------
@dataclass
class Stack:
    base: str
    api_port: int
    api: subprocess.Popen[bytes]

    def get(self, path: str, source: str = "127.0.0.1") -> requests.Response:
        return _session(source).get(f"{self.base}{path}", timeout=10)

    def post(self, path: str, body: bytes, source: str = "127.0.0.1") -> requests.Response:
        return _session(source).post(f"{self.base}{path}", data=body, timeout=10,
                                     headers={"Content-Type": "application/json"})


class _SourceAdapter(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["source_address"] = (self.source, 0)
        return super().init_poolmanager(*args, **kwargs)


def _session(source: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", _SourceAdapter(source))
    return s


def _wait_ready_notification(sock: socket.socket, proc: subprocess.Popen[bytes]) -> str:
    """What gunicorn sends to $NOTIFY_SOCKET (tpv-broker-api.service is Type=notify)."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "tpv-broker serve exited during start-up"
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            continue
        if "READY=1" in message:
            return message
    raise AssertionError("no READY=1 from tpv-broker serve")


@contextlib.contextmanager
def running_nginx(tmp: Path, api_port: int | Path) -> Iterator[str]:
    """nginx with the example, proxying to api_port; yields its base URL."""
    tmp.mkdir(exist_ok=True)
    nginx_port = free_port()
    site = tmp / "tpv-broker.conf"
    site.write_text(site_config(api_port, nginx_port))
    proc = subprocess.Popen(nginx_command(main_config(tmp, site), tmp),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{nginx_port}"

    def listening() -> bool:
        assert proc.poll() is None, (tmp / "error.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", nginx_port), timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_for(listening, "nginx to listen")
        yield base
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _publish(client: redis.Redis) -> None:
    now = time.time()
    SnapshotStore(client, KeySchema("tpv_broker")).publish(Snapshot(
        meta=SnapshotMeta(created_at=now, destinations=2, collector="test"),
        destinations={
            "pulsar_de": DestinationFigures(id="pulsar_de", status="online", queued=0, running=2, cpus_free=16,
                                            cpus_total=32, mem_free_gb=64, mem_total_gb=128, metrics_at=now,
                                            live_at=now, sources={"queue_by_destination": now}),
            "condor_us": DestinationFigures(id="condor_us", status="offline", queued=0),
        },
    ))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("nginx-stack")
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    _publish(client)
    api_port = free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    env = clean_env()
    env.update(TPV_BROKER_REDIS_URL=redis_url, NOTIFY_SOCKET=str(tmp / "notify.sock"))
    with open(tmp / "api.log", "wb") as log:
        api = subprocess.Popen([str(TPV_BROKER), "serve", "--bind", f"127.0.0.1:{api_port}", "--workers", "1"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _wait_ready_notification(notify, api).startswith("READY=1")
        with running_nginx(tmp / "nginx", api_port) as base:
            yield Stack(base, api_port, api)
    finally:
        notify.close()
        _stop(api)
        client.flushall()
        client.close()
    assert api.returncode == 0, (tmp / "api.log").read_text()


RANK = json.dumps({"job": {"tool_id": "bwa", "cores": 4, "mem": 8},
                   "destinations": [{"id": "condor_us"}, {"id": "pulsar_de"}]}).encode()


def _idle_upstream_connections(port: int) -> int:
    """ESTABLISHED TCP connections to the API's port (from nginx)."""
    target = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == target and fields[3] == "01":
            count += 1
    return count


def test_rank_request_through_nginx(stack: Stack) -> None:
    r = stack.post("/api/rank", RANK)
    assert r.status_code == 200, r.text
    # The API's order, not TPV's: condor_us is offline.
    assert r.json()["destinations"] == ["pulsar_de", "condor_us"]
    assert r.json()["degraded"] is False
    # The prototype's endpoint is open to Galaxy too (it answers, whatever it says).
    assert stack.post("/process_data", b"{}").headers["Content-Type"] == "application/json"


def test_upstream_connections_are_kept_alive(stack: Stack) -> None:
    # After an answer, nginx keeps its connection to gunicorn open (for up to
    # its 1 s upstream keepalive_timeout); without `keepalive` it closes it at
    # once. Looked at right after each of a few requests.
    seen = []
    for _ in range(3):
        assert stack.post("/api/rank", RANK).status_code == 200
        seen.append(_idle_upstream_connections(stack.api_port))
    assert max(seen) >= 1, seen


def test_health_is_open_to_everyone(stack: Stack) -> None:
    r = stack.get("/health", source=OUTSIDER)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert stack.get("/ready", source=OUTSIDER).status_code == 200


@pytest.mark.parametrize("path", ["/metrics", "/", "/docs", "/openapi.json"])
def test_admin_pages_only_from_admin_networks(stack: Stack, path: str) -> None:
    refused = stack.get(path, source=OUTSIDER)
    assert refused.status_code == 403
    assert refused.json()["error"] == "Forbidden"
    # From an admin address the request reaches the API (whatever it answers
    # there: the API itself never answers 403).
    assert stack.get(path).status_code != 403


def test_rank_only_from_galaxy_handlers(stack: Stack) -> None:
    r = stack.post("/api/rank", RANK, source=OUTSIDER)
    assert r.status_code == 403 and r.json()["message"] == "url: not allowed from this address (refused by nginx)"


def test_body_limit_matches_max_request_bytes(stack: Stack) -> None:
    limit = ApiSettings().max_request_bytes
    assert re.search(r"client_max_body_size 1m;", EXAMPLE.read_text()) and limit == 1024 * 1024

    def body(size: int) -> bytes:
        head = b'{"job": {"tool_id": "bwa"}, "destinations": [{"id": "pulsar_de"}], "pad": "'
        return head + b"x" * (size - len(head) - 2) + b'"}'

    at_limit = stack.post("/api/rank", body(limit))
    # Through nginx to the API, which names the unknown field.
    assert at_limit.status_code == 400 and at_limit.json()["errors"][0]["field"] == "pad", at_limit.text
    over = stack.post("/api/rank", body(limit + 1))
    assert over.status_code == 413
    assert over.json()["message"] == f"body: request body larger than {limit} bytes (refused by nginx)"


def test_a_hung_api_gets_a_gateway_timeout(stack: Stack) -> None:
    # Every gunicorn process frozen: its socket still accepts, nothing answers.
    os.killpg(stack.api.pid, signal.SIGSTOP)
    try:
        r = stack.post("/api/rank", RANK)
    finally:
        os.killpg(stack.api.pid, signal.SIGCONT)
    # Within the requests timeout of 10 s, i.e. nginx's proxy_read_timeout
    # (1 s) ended it: nginx's default would wait 60 s.
    assert r.status_code == 504 and r.json()["error"] == "Gateway Timeout"


def test_over_a_unix_socket(tmp_path: Path, redis_url: str) -> None:
    # The socket the API unit's RuntimeDirectory is for, set as the unit
    # would: api.bind in the config (here its environment override).
    # (A fresh snapshot, without flushing the one the module's stack uses.)
    with redis.Redis.from_url(redis_url) as client:
        _publish(client)
    sock = tmp_path / "api.sock"
    env = clean_env()
    env.update(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_API_BIND=f"unix:{sock}", TPV_BROKER_API_WORKERS="1")
    with open(tmp_path / "api.log", "wb") as log:
        api = subprocess.Popen([str(TPV_BROKER), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for(lambda: api.poll() is None and sock.exists(), "the API's unix socket")
        with running_nginx(tmp_path / "nginx", sock) as base:
            r = Stack(base, 0, api).post("/api/rank", RANK)
    finally:
        _stop(api)
    assert r.status_code == 200 and r.json()["destinations"] == ["pulsar_de", "condor_us"], r.text


def test_a_stopped_api_gets_a_bad_gateway(tmp_path: Path) -> None:
    with running_nginx(tmp_path, free_port()) as base:
        r = _session("127.0.0.1").post(f"{base}/api/rank", data=RANK, timeout=10)
    assert r.status_code == 502 and r.json()["error"] == "Bad Gateway"
