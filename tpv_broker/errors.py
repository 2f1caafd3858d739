"""One small error hierarchy. Every message names the offending item, so the
CLI can print it as it is and exit 1 without a traceback. And the few words
that say why a server could not be reached."""

import re
from collections.abc import Callable


class BrokerError(Exception):
    """Base of every error TPV Broker raises on purpose."""


class ConfigError(BrokerError):
    """The configuration file or an environment override is invalid."""


class MetricSourceError(BrokerError):
    """InfluxDB could not be reached or did not answer sensibly."""


class MetricSourceTimeout(MetricSourceError):
    """InfluxDB did not answer, or finish its answer, within the time limit."""


class StoreError(BrokerError):
    """Redis could not be reached or refused a command."""


class StoreAuthError(StoreError):
    """Redis refused the credentials (a wrong password, or none given)."""


class StorePermissionError(StoreError):
    """Redis refused a command to this user (its ACL rules)."""


# What to say instead of requests' InvalidURL message, which quotes whatever
# it took for the host: a piece of a password with an unescaped / # or ? in it.
URL_UNPARSABLE = "the URL cannot be parsed (%-encode / # ? @ and % in a user name or password)"

# Known reasons, as the OS or OpenSSL words them, and as an admin reads them.
_NETWORK_WORDS = (
    ("Connection refused", "connection refused"),
    ("Name or service not known", "name or service not known"),
    ("Temporary failure in name resolution", "name lookup failed"),
    ("No route to host", "no route to host"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
    ("timed out", "timed out"),
)
_OS_WORDS = re.compile(r"\[Errno -?\d+\][^'\")]*")


def network_reason(exc: BaseException, scrub: Callable[[str], str] = str) -> str:
    """Why a request to a server failed, in a few words. requests nests
    urllib3's reason, and the OS's within it, several levels deep; an admin
    needs the innermost: a known reason ("connection refused"), else the
    OS's own words ("[Errno 104] Connection reset by peer"), else the first
    line of the message, at most 200 characters. ``scrub`` takes the
    caller's credentials out of the whole message first: cut, a secret
    would no longer match."""
    text = scrub(str(exc))
    for marker, said in _NETWORK_WORDS:
        if marker in text:
            return said
    found = _OS_WORDS.search(text)
    if found:
        return found.group(0).rstrip(". ")
    first = text.splitlines()[0] if text else ""
    return first[:200] if first else type(exc).__name__
