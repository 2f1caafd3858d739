"""The load generator: a lean keep-alive HTTP/1.1 client on a raw socket,
run in processes of its own (never inside a server process).

Each request is prebuilt bytes; the client reads the status line, the
headers and Content-Length bytes of body, and reconnects when the server
closes the connection (gunicorn's sync workers close after every request;
the connect then counts in that request's latency, as it would for TPV's
``requests.post``). Latency is measured around send + full read.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any


def build_requests(host: str, path: str, bodies: list[dict[str, Any]], token: str | None = None) -> list[bytes]:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    out = []
    for body in bodies:
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n"
        ).encode()
        out.append(head + data)
    return out


class Client:
    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.addr = (host, port)
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.connects = 0

    def _connect(self) -> socket.socket:
        s = socket.create_connection(self.addr, timeout=self.timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1
        return s

    def request(self, raw: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            fresh = self.sock is None
            if self.sock is None:
                self.sock = self._connect()
            try:
                self.sock.sendall(raw)
                return self._read()
            except (ConnectionError, _Closed):
                # A kept-alive connection the server closed meanwhile: once more, fresh.
                self.close()
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    def _read(self) -> tuple[int, bytes]:
        assert self.sock is not None
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Closed()
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Closed()
            rest += chunk
        if close:
            self.close()
        return status, rest[:length]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _Closed(Exception):
    pass


@dataclass
class RunSpec:
    host: str
    port: int
    requests: list[bytes]
    max_requests: int
    max_seconds: float
    warmup: int = 0
    # Idle time between one answer and the next request (not in any figure):
    # TPV asks once per job, not back to back.
    pace_s: float = 0.0


def _client_loop(spec: RunSpec, offset: int, ready: Callable[[], object] | None = None) -> dict[str, Any]:
    """One client: warm up, ``ready()`` (blocks until every client is warm),
    then measure."""
    client = Client(spec.host, spec.port)
    n = len(spec.requests)
    errors = 0
    first_error = None
    for i in range(spec.warmup):
        client.request(spec.requests[(offset + i) % n])
    if ready is not None:
        ready()
    lat: list[float] = []
    paused = 0.0
    t0 = time.perf_counter()
    deadline = t0 + spec.max_seconds
    i = 0
    while i < spec.max_requests:
        raw = spec.requests[(offset + i) % n]
        s = time.perf_counter()
        status, body = client.request(raw)
        e = time.perf_counter()
        if status != 200:
            errors += 1
            first_error = first_error or f"HTTP {status}: {body[:200]!r}"
        lat.append(e - s)
        i += 1
        if e >= deadline:
            break
        if spec.pace_s:
            time.sleep(spec.pace_s)
            paused += time.perf_counter() - e
    elapsed = time.perf_counter() - t0 - paused
    client.close()
    return {"latencies": lat, "elapsed": elapsed, "errors": errors, "first_error": first_error,
            "connects": client.connects}


# How long a warm client waits for the others before giving up.
START_TIMEOUT_S = 120.0


def _child(spec: RunSpec, offset: int, start: Barrier, q: Any) -> None:
    try:
        q.put(_client_loop(spec, offset, lambda: start.wait(START_TIMEOUT_S)))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        # The clients still waiting would otherwise wait out the timeout.
        start.abort()
        q.put({"exception": f"{type(e).__name__}: {e}"})


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def run(spec: RunSpec, clients: int) -> dict[str, Any]:
    """``clients`` == 1: sequential, in this process. More: one process per
    client, each warmed up, then all measuring together (released by a
    barrier as soon as the last is warm: no fixed start delay to wait out
    in every round). Returns the raw latencies (s), the wall time (the
    longest client's), requests, errors; ``summarize`` turns one or more
    of these into percentiles and throughput."""
    if clients == 1:
        parts = [_client_loop(spec, 0)]
    else:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        start = ctx.Barrier(clients)
        procs = [ctx.Process(target=_child, args=(spec, k * 7, start, q)) for k in range(clients)]
        for p in procs:
            p.start()
        parts = [q.get(timeout=spec.max_seconds + START_TIMEOUT_S + 120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        for part in parts:
            if "exception" in part:
                raise RuntimeError(f"load client failed: {part['exception']}")
    return {
        "clients": clients,
        "latencies": [x for part in parts for x in part["latencies"]],
        "seconds": max(part["elapsed"] for part in parts),
        "errors": sum(part["errors"] for part in parts),
        "first_error": next((part["first_error"] for part in parts if part["first_error"]), None),
        "connects": sum(part["connects"] for part in parts),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one measurement: all latencies together; throughput
    = all requests / the rounds' wall time added up. Latencies in ms."""
    lat = sorted(x for r in runs for x in r["latencies"])
    wall = sum(r["seconds"] for r in runs)
    return {
        "clients": runs[0]["clients"],
        "rounds": len(runs),
        "requests": len(lat),
        "errors": sum(r["errors"] for r in runs),
        "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
        "connects": sum(r["connects"] for r in runs),
        "seconds": round(wall, 3),
        "throughput_rps": round(len(lat) / wall, 1) if wall > 0 else None,
        "p50_ms": round(percentile(lat, 50) * 1000, 3),
        "p90_ms": round(percentile(lat, 90) * 1000, 3),
        "p99_ms": round(percentile(lat, 99) * 1000, 3),
        "mean_ms": round(sum(lat) / len(lat) * 1000, 3) if lat else None,
    }
