"""URLs and messages shown to people (logs, errors, ``inspect``) never carry
credentials."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

# Query parameters that carry credentials: redis-py reads ?password=,
# InfluxDB 1.x ?u=&p=.
_SECRET_QUERY = re.compile(r"([?&;](?:password|pass|pwd|p|token|auth|secret|api_key)=)[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://***@host:6379/0``.

    Everything between ``://`` and the *last* ``@`` is dropped, not only what
    a URL parser calls the user info: a password with an unescaped ``/``,
    ``#`` or ``?`` in it ends the parser's netloc early, and would otherwise be
    shown as part of the path."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    rest = _SECRET_QUERY.sub(r"\1***", rest)
    return f"{scheme}{sep}{rest}"


def url_secrets(url: str) -> list[str]:
    """The credential parts of ``url`` (user info, secret query values), as
    written and decoded, for ``scrub``."""
    _, sep, rest = url.partition("://")
    rest = rest if sep else url
    found = []
    if "@" in rest:
        userinfo = rest.rsplit("@", 1)[0]
        found += [userinfo, *userinfo.split(":", 1)]
    found += [m.group(0).split("=", 1)[1] for m in _SECRET_QUERY.finditer(rest)]
    return [s for s in found if s]


def url_password(url: str) -> str | None:
    """The password in ``url``'s user info, as written. Split at the last
    ``@`` like ``url_secrets``: urlsplit gives none for a password holding
    an unescaped / # or ?."""
    _, sep, rest = url.partition("://")
    userinfo, at, _ = (rest if sep else url).rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (and its %-encoded and decoded forms)
    replaced by ``***``: for messages built from third-party exceptions,
    which may quote a URL or a header they choked on."""
    forms = set()
    for secret in secrets:
        if secret:
            forms.update({secret, unquote(secret), quote(secret, safe=""), repr(secret)[1:-1]})
    # Longest first, so a secret that contains another is replaced whole.
    for form in sorted((f for f in forms if len(f) >= 3), key=len, reverse=True):
        text = text.replace(form, "***")
    return text
