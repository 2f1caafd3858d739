"""Optional bearer-token auth, one check for every route listed in
``api.auth_protected`` (the rank endpoints by default; any route added later
opts in by being listed there).

Tokens come from ``api.auth_tokens`` (``TPV_BROKER_API_AUTH_TOKENS``, comma-
separated) and/or ``api.auth_tokens_file`` (one per line). Only their SHA-256
digests are kept, and a presented token is compared with every one of them
in constant time, so neither its content nor which token matched, nor a
token's length, shows in the answer time. Tokens never reach a log line, an
error message or an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, jsonify, request

from tpv_broker.config.settings import TOKEN_CHARS, ApiSettings, token_problem
from tpv_broker.errors import ConfigError

log = logging.getLogger("tpv_broker.api")

REALM = "tpv-broker"
MISSING = "missing: this endpoint needs 'Authorization: Bearer <token>'"
# Schemes named back to a client that used one; anything else could be a
# token sent without "Bearer " and is not echoed.
_KNOWN_SCHEMES = {s.lower(): s for s in ("Basic", "Digest", "Token", "Negotiate", "NTLM", "DPoP", "ApiKey")}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class TokenSet:
    digests: tuple[bytes, ...]
    from_settings: int
    from_file: int

    def accepts(self, presented: str) -> bool:
        candidate = _digest(presented)
        match = False
        # Every digest is compared, whatever matched first: the time taken
        # does not depend on which token (if any) was presented.
        for digest in self.digests:
            match |= hmac.compare_digest(candidate, digest)
        return match


def read_tokens_file(path: Path) -> list[str]:
    """One token per line; blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"api.auth_tokens_file: cannot read {path}: {e.strerror or type(e).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"api.auth_tokens_file: {path} is not UTF-8 text") from None
    tokens = []
    for n, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        problem = token_problem(token)
        if problem:
            raise ConfigError(f"api.auth_tokens_file: {path} line {n}: the token {problem}")
        tokens.append(token)
    return tokens


def load_tokens(settings: ApiSettings) -> TokenSet | None:
    """The accepted tokens, or None when auth is off (nothing configured).
    A configured file that cannot be read or holds no token stops start-up:
    failing closed, loudly, rather than serving openly by mistake."""
    if not settings.auth_configured:
        return None
    inline = [t.get_secret_value() for t in settings.auth_tokens]
    from_file = read_tokens_file(settings.auth_tokens_file) if settings.auth_tokens_file is not None else []
    if not inline and not from_file:
        raise ConfigError(f"api.auth_tokens_file: {settings.auth_tokens_file} holds no token")
    digests = tuple(dict.fromkeys(_digest(t) for t in inline + from_file))
    return TokenSet(digests, len(inline), len(from_file))


def describe(settings: ApiSettings, tokens: TokenSet | None) -> str:
    """One line for the start-up log: whether auth is on, never a token."""
    if tokens is None:
        return "API auth off: every endpoint is open (set api.auth_tokens or api.auth_tokens_file to require a token)"
    sources = []
    if tokens.from_settings:
        sources.append(f"{tokens.from_settings} from api.auth_tokens")
    if tokens.from_file:
        sources.append(f"{tokens.from_file} from {settings.auth_tokens_file}")
    protected = ", ".join(settings.auth_protected)
    return f"API auth on for {protected}: {len(tokens.digests)} token(s) ({', '.join(sources)})"


def file_warning(settings: ApiSettings) -> str | None:
    """A tokens file anyone on the machine can read is a leaked token."""
    path = settings.auth_tokens_file
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # load_tokens says why
    if mode & stat.S_IROTH:
        return (f"api.auth_tokens_file {path} is readable by every user (mode {stat.S_IMODE(mode):o}): "
                f"chmod 600 it (or 640 with the API's group)")
    return None


def check_header(header: str | None, tokens: TokenSet) -> tuple[str, str] | None:
    """None if ``header`` (the Authorization header) carries an accepted
    token, else (RFC 6750 error code or "", what is wrong)."""
    if header is None or not header.strip():
        return "", MISSING
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        known = _KNOWN_SCHEMES.get(scheme.lower()) if token else None
        got = f"the scheme {known!r}" if known else "something else (not shown)"
        return "invalid_request", f"malformed: expected 'Bearer <token>', got {got}"
    token = token.strip()
    if not token:
        return "invalid_request", "malformed: 'Bearer' without a token"
    if not TOKEN_CHARS.fullmatch(token):
        return "invalid_request", "malformed: the token holds characters a bearer token cannot"
    if not tokens.accepts(token):
        return "invalid_token", "wrong token: not one this API accepts"
    return None


def refusal(problem: str) -> dict[str, object]:
    """The body of a 401 (also the OpenAPI document's example)."""
    return {"error": "unauthorized", "message": f"Authorization: {problem}",
            "errors": [{"field": "Authorization", "problem": problem}]}


def _unauthorized(code: str, problem: str) -> tuple[Response, int]:
    response = jsonify(refusal(problem))
    challenge = f'Bearer realm="{REALM}"'
    if code:
        challenge += f', error="{code}"'
    response.headers["WWW-Authenticate"] = challenge
    return response, 401


def install(app: Flask, settings: ApiSettings) -> None:
    """Guard ``settings.auth_protected``. Call once every route is
    registered: a listed path that is no route fails start-up (a typo
    there would leave the real route open)."""
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    unknown = [p for p in settings.auth_protected if p not in routes]
    if unknown:
        raise ConfigError(f"api.auth_protected: {', '.join(map(repr, unknown))} is not an endpoint of this API "
                          f"(endpoints: {', '.join(sorted(routes - {'/static/<path:filename>'}))})")
    tokens = load_tokens(settings)
    if tokens is None:
        return
    protected = frozenset(settings.auth_protected)

    @app.before_request
    def _require_token() -> tuple[Response, int] | None:
        rule = request.url_rule
        if rule is None or rule.rule not in protected:
            return None
        failure = check_header(request.headers.get("Authorization"), tokens)
        if failure is None:
            return None
        code, problem = failure
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr,
                    problem.split(":", 1)[0])
        return _unauthorized(code, problem)
