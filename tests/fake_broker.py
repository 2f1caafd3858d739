"""A stand-in for the broker's API on loopback, for the client's tests: it
answers ``POST /api/rank`` however a test tells it to (ranked, 500, garbage,
hung, trickling) and records what it received.

Standard library only: the TPV tests (tests_tpv/, in a venv without the
service) use it too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

# How long a hung or trickling answer goes on at most, so a broken test
# cannot keep a thread alive for ever.
STALL_LIMIT_S = 30.0

Behaviour = Callable[["_Handler", dict[str, Any]], None]


def ranked(order: Callable[[list[str]], list[str]] = lambda ids: ids[::-1], degraded: bool = False) -> Behaviour:
    """200 with the candidates' ids in ``order(ids)`` (default: reversed)."""

    def behave(h: _Handler, body: dict[str, Any]) -> None:
        ids = [d["id"] for d in body.get("destinations", [])]
        h.reply(200, json.dumps({"destinations": order(ids), "snapshot_age_s": 1.0, "degraded": degraded}).encode())

    return behave


def status(code: int, text: bytes = b'{"error": "boom"}') -> Behaviour:
    return lambda h, body: h.reply(code, text)


def garbage(text: bytes = b"<html>502 Bad Gateway</html>") -> Behaviour:
    return lambda h, body: h.reply(200, text)


def hang(h: _Handler, body: dict[str, Any]) -> None:
    """Read the request, then say nothing until the test ends."""
    h.server.released.wait(STALL_LIMIT_S)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Trickled:
    """How far a trickled answer got: whether the client hung up before its
    end, and after how many bytes (counting the one or two the kernel still
    accepts once the client has closed, before its reset comes back)."""

    sent: int
    head: int  # bytes of the status line and headers
    total: int
    hung_up: bool


def trickle(every_s: float = 0.05, headers_too: bool = False) -> Behaviour:
    """Send a valid answer one byte at a time, each byte well within any
    read timeout; ``headers_too``: the status line and headers as well.
    How far it got goes to ``FakeBroker.trickled``."""

    def behave(h: _Handler, body: dict[str, Any]) -> None:
        ids = [d["id"] for d in body.get("destinations", [])]
        payload = json.dumps({"destinations": ids, "degraded": False}).encode()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        sent, hung_up = 0, False
        try:
            if not headers_too:
                h.wfile.write(head)
                h.wfile.flush()
                sent = len(head)
            end = time.monotonic() + STALL_LIMIT_S
            for byte in (head if headers_too else b"") + payload:
                if h.server.released.is_set() or time.monotonic() > end:  # type: ignore[attr-defined]
                    break
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                sent += 1
                time.sleep(every_s)
        except OSError:  # the client closed the connection (broken pipe, reset)
            hung_up = True
        h.close_connection = True
        h.server.fake.record_trickle(  # type: ignore[attr-defined]
            Trickled(sent=sent, head=len(head), total=len(head) + len(payload), hung_up=hung_up))

    return behave


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn behind nginx

    def do_POST(self) -> None:
        fake: FakeBroker = self.server.fake  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        with fake.lock:
            fake.requests.append(body)
            fake.authorizations.append(self.headers.get("Authorization"))
            fake.connections.add(self.client_address)
        fake.behaviour(self, body)

    def reply(self, code: int, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeBroker:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour: Behaviour = behaviour or ranked()
        self.requests: list[dict[str, Any]] = []
        # Each request's Authorization header (None when it had none).
        self.authorizations: list[str | None] = []
        self.connections: set[tuple[str, int]] = set()
        # Each trickled answer once it ended; ``trickle_ended`` is set then.
        self.trickled: list[Trickled] = []
        self.trickle_ended = threading.Event()
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        # A client that hangs up mid-answer (as it should past its budget)
        # is not an error worth a traceback.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server.fake = self  # type: ignore[attr-defined]
        self._server.released = threading.Event()  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def record_trickle(self, trickled: Trickled) -> None:
        with self.lock:
            self.trickled.append(trickled)
        self.trickle_ended.set()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.released.set()  # type: ignore[attr-defined]
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
