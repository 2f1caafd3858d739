"""One HTTP round trip that cannot outlast its deadline.

requests' timeouts bound each socket operation, not the whole call: a server
that trickles a byte now and then never trips them, and name resolution is
not covered at all. So the call runs in a short-lived worker thread and the
caller waits for it only until the deadline; the worker stops reading at the
deadline too (its connection is shut down then: ``DeadlineAdapter``), so an
abandoned call does not linger on a trickling server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Callable, TypeVar

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

T = TypeVar("T")

_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    # The answer is small; identity keeps the byte count we cap the true one.
    "Accept-Encoding": "identity",
}
_CHUNK = 65536


class CallFailed(Exception):
    """The broker gave no usable answer; the message says why, for the log."""


_LATE = "the answer was still arriving when the budget ran out"


class _Call(threading.local):
    """The call this thread is making (``post_json``): its deadline, and the
    timer that shuts its connection down then."""

    deadline: float | None = None
    timer: threading.Timer | None = None


_call = _Call()


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile
        sock.shutdown(socket.SHUT_RDWR)


def _shut_down_at_deadline(sock: socket.socket | None) -> None:
    """Called as a connection starts reading an answer. requests' timeouts
    bound each receive, which a server trickling a byte now and then never
    trips: http.client reads the status line and headers that way, urllib3
    < 2 the body too. So at the call's deadline its socket is shut down, and
    an abandoned worker stops reading there, not when the server is done."""
    deadline = _call.deadline
    if sock is None or deadline is None or _call.timer is not None:
        return
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shut_down, (sock,))
    timer.daemon = True
    timer.start()
    _call.timer = timer


class _HTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3's own
        _shut_down_at_deadline(self.sock)
        return super().getresponse()


class _HTTPSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3's own
        _shut_down_at_deadline(self.sock)
        return super().getresponse()


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with connections that stop reading an answer at
    the deadline of the call (``post_json``) reading it."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def run_until(deadline: float, work: Callable[[], T], budget_s: float) -> T:
    """``work()``'s result if it finishes before ``deadline`` (monotonic
    seconds); else CallFailed, while the worker runs on by itself."""
    value: list[T] = []
    error: list[BaseException] = []
    done = threading.Event()

    def worker() -> None:
        try:
            value.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)
        finally:
            done.set()

    # A daemon thread: one stuck in name resolution must not hold up
    # Galaxy's shutdown.
    threading.Thread(target=worker, name="tpv-broker-client", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise CallFailed(f"no answer within the {budget_s:g} s budget")
    if error:
        raise error[0]
    return value[0]


def _reason(exc: BaseException) -> str:
    """The root cause of a requests error in a few words ("Connection
    refused"), not urllib3's nested repr."""
    seen = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _read_body(response: requests.Response, deadline: float, max_bytes: int) -> bytes:
    # read1 returns whatever one receive brings, so the deadline is checked
    # between the pieces of a trickled answer (urllib3 < 2 has no read1).
    read = getattr(response.raw, "read1", None) or response.raw.read
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = read(_CHUNK)
        # After the read: an end that comes at the deadline is the shutdown's
        # (DeadlineAdapter), not the answer's.
        if time.monotonic() >= deadline:
            raise CallFailed(_LATE)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise CallFailed(f"the answer is larger than {max_bytes} bytes")
        chunks.append(chunk)


def post_json(
    session: requests.Session, url: str, payload: bytes, deadline: float, max_bytes: int
) -> tuple[int, bytes]:
    """POST ``payload``; the status and the whole body, read by ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise CallFailed("the budget ran out before the request was sent")
    _call.deadline = deadline
    try:
        with session.post(
            url,
            data=payload,
            headers=_HEADERS,
            # Each socket operation may take at most what is left; the
            # deadline checks above and in run_until, and a session with a
            # DeadlineAdapter, bound the sum.
            timeout=(remaining, remaining),
            stream=True,
            allow_redirects=False,
        ) as response:
            return response.status_code, _read_body(response, deadline, max_bytes)
    except (requests.Timeout, urllib3.exceptions.TimeoutError, socket.timeout):
        raise CallFailed("timed out") from None
    # The body is read from urllib3 directly, so its errors arrive unwrapped.
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        # Past the deadline, a broken connection is the shutdown's doing.
        raise CallFailed(_LATE if time.monotonic() >= deadline else f"request failed: {_reason(exc)}") from None
    finally:
        if _call.timer is not None:
            _call.timer.cancel()
        _call.deadline, _call.timer = None, None
