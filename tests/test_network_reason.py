"""Why a server could not be reached, in the few words every message uses
(the collector's, check-config's, ``tenants --api``'s)."""

from __future__ import annotations

import pytest
import requests

from tpv_broker.errors import network_reason

WRAPPED = ("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /query (Caused by "
           "NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new "
           "connection: {}'))")


@pytest.mark.parametrize(("os_words", "said"), [
    ("[Errno 111] Connection refused", "connection refused"),
    ("[Errno -2] Name or service not known", "name or service not known"),
    ("[Errno -3] Temporary failure in name resolution", "name lookup failed"),
    ("[Errno 113] No route to host", "no route to host"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "TLS certificate verification failed"),
    ("timed out", "timed out"),
    ("[Errno 104] Connection reset by peer", "[Errno 104] Connection reset by peer"),
])
def test_the_innermost_reason_of_a_wrapped_error(os_words: str, said: str) -> None:
    assert network_reason(requests.ConnectionError(WRAPPED.format(os_words))) == said


def test_otherwise_the_first_line_short_or_the_kind_of_error() -> None:
    assert network_reason(RuntimeError("something odd\nand more")) == "something odd"
    assert network_reason(RuntimeError("x" * 500)) == "x" * 200
    assert network_reason(requests.ConnectionError()) == "ConnectionError"


def test_a_real_refused_connection() -> None:
    with pytest.raises(requests.RequestException) as caught:
        requests.get("http://127.0.0.1:9/", timeout=2)
    assert network_reason(caught.value) == "connection refused"


def test_the_callers_secrets_go_before_the_message_is_cut() -> None:
    secret = "s3cr3t-" * 40  # longer than the 200 characters kept
    said = network_reason(ValueError(f"bad header value: 'Token {secret}\r'"), lambda t: t.replace(secret, "***"))
    assert said == "bad header value: 'Token ***"  # the first line: \r ends it
