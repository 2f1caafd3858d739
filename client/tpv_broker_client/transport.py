"""One HTTP round trip that cannot outlast its deadline.

requests' timeouts bound each socket operation, not the whole call: a server
that trickles a byte now and then never trips them, and name resolution is
not covered at all. So the call runs in a short-lived worker thread and the
caller waits for it only until the deadline; the worker stops reading at the
deadline too, so an abandoned call does not linger on a trickling server.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, TypeVar

import requests
import urllib3

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
        if time.monotonic() >= deadline:
            raise CallFailed("the answer was still arriving when the budget ran out")
        chunk = read(_CHUNK)
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
    try:
        with session.post(
            url,
            data=payload,
            headers=_HEADERS,
            # Each socket operation may take at most what is left; the
            # deadline checks above and in run_until bound the sum.
            timeout=(remaining, remaining),
            stream=True,
            allow_redirects=False,
        ) as response:
            return response.status_code, _read_body(response, deadline, max_bytes)
    except (requests.Timeout, urllib3.exceptions.TimeoutError, socket.timeout):
        raise CallFailed("timed out") from None
    # The body is read from urllib3 directly, so its errors arrive unwrapped.
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise CallFailed(f"request failed: {_reason(exc)}") from None
