"""Optional bearer-token auth, one check for every route listed in
``api.auth_protected`` (the rank endpoints by default; any route added later
opts in by being listed there).

Tokens come from ``api.auth_tokens`` (``TPV_BROKER_API_AUTH_TOKENS``, comma-
separated) and/or ``api.auth_tokens_file`` (one per line): the broker's own,
tenant ``default``; and, on a broker several Galaxy servers share, from each
``api.tenants.<name>``: the token says which Galaxy is asking (``g.tpv_tenant``),
never the request's body. Only their SHA-256 digests are kept, and a
presented token is compared with every one of them in constant time, so
neither its content nor which token matched, nor a token's length, shows in
the answer time. Tokens never reach a log line, an error message or an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, g, jsonify, request
from pydantic import SecretStr

from tpv_broker.config.api_settings import TOKEN_CHARS, ApiSettings, token_problem
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.errors import ConfigError
from tpv_broker.ids import DEFAULT_TENANT

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
    # Each accepted token's digest, and the tenant it belongs to.
    digests: tuple[bytes, ...]
    tenants: tuple[str, ...]
    # How many tokens each source gave (for the start-up log).
    sources: tuple[tuple[str, int], ...]

    def tenant_of(self, presented: str) -> str | None:
        """The tenant ``presented`` belongs to, None if no token matches."""
        candidate = _digest(presented)
        found = None
        # Every digest is compared, whatever matched first: the time taken
        # does not depend on which token (if any) was presented.
        for digest, tenant in zip(self.digests, self.tenants, strict=True):
            if hmac.compare_digest(candidate, digest):
                found = tenant
        return found


def read_tokens_file(path: Path, setting: str = "api.auth_tokens_file") -> list[str]:
    """One token per line; blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path}: {e.strerror or type(e).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}: {path} is not UTF-8 text") from None
    tokens = []
    for n, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        problem = token_problem(token)
        if problem:
            raise ConfigError(f"{setting}: {path} line {n}: the token {problem}")
        tokens.append(token)
    return tokens


def _token_sources(settings: ApiSettings) -> list[tuple[str, str, list[SecretStr], Path | None]]:
    """(tenant, its settings' name, inline tokens, tokens file), the
    broker's own first."""
    own = ("api", settings.auth_tokens, settings.auth_tokens_file)
    return [(DEFAULT_TENANT, *own)] + [(name, f"api.tenants.{name}", t.auth_tokens, t.auth_tokens_file)
                                       for name, t in settings.tenants.items()]


def load_tokens(settings: ApiSettings) -> TokenSet | None:
    """The accepted tokens, or None when auth is off (nothing configured).
    A configured file that cannot be read or holds no token stops start-up:
    failing closed, loudly, rather than serving openly by mistake; so does
    one token given to two tenants (whose requests would it be?)."""
    if not settings.auth_configured:
        return None
    owner: dict[bytes, str] = {}
    sources = []
    for tenant, setting, inline, path in _token_sources(settings):
        tokens = [t.get_secret_value() for t in inline]
        if inline:
            sources.append((f"{setting}.auth_tokens", len(inline)))
        if path is not None:
            from_file = read_tokens_file(path, f"{setting}.auth_tokens_file")
            if not from_file and not inline:
                raise ConfigError(f"{setting}.auth_tokens_file: {path} holds no token")
            sources.append((str(path), len(from_file)))
            tokens += from_file
        for token in tokens:
            other = owner.setdefault(_digest(token), tenant)
            if other != tenant:
                raise ConfigError(f"{setting}: a token of tenant {tenant!r} is also one of tenant {other!r}: "
                                  f"a token must say which Galaxy is asking")
    return TokenSet(tuple(owner), tuple(owner.values()), tuple(sources))


def describe(settings: ApiSettings, tokens: TokenSet | None) -> str:
    """One line for the start-up log: whether auth is on, never a token."""
    if tokens is None:
        return ("API auth off: every endpoint is open (set api.auth_tokens or api.auth_tokens_file to require "
                "a token)")
    sources = ", ".join(f"{n} from {where}" for where, n in tokens.sources)
    protected = ", ".join(settings.auth_protected)
    tenants = f"; tenants: {', '.join(dict.fromkeys(tokens.tenants))}" if settings.tenants else ""
    return f"API auth on for {protected}: {len(tokens.digests)} token(s) ({sources}){tenants}"


def file_warning(settings: ApiSettings) -> str | None:
    """A tokens file anyone on the machine can read is a leaked token."""
    for _, setting, _, path in _token_sources(settings):
        if path is None:
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # load_tokens says why
        if mode & stat.S_IROTH:
            return (f"{setting}.auth_tokens_file {path} is readable by every user (mode {stat.S_IMODE(mode):o}): "
                    f"chmod 600 it (or 640 with the API's group)")
    return None


def check_header(header: str | None, tokens: TokenSet) -> str | tuple[str, str]:
    """The tenant whose token ``header`` (the Authorization header)
    carries, else (RFC 6750 error code or "", what is wrong)."""
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
    tenant = tokens.tenant_of(token)
    if tenant is None:
        return "invalid_token", "wrong token: not one this API accepts"
    return tenant


def request_tenant() -> str:
    """The tenant of the request being handled: its token's, or the
    broker's own when auth is off or the route needs no token."""
    tenant: str = g.get("tpv_tenant", DEFAULT_TENANT)
    return tenant


# Not a tenant id (ids.py): sees only what every tenant shares.
NOBODY = ""


def viewer(config: BrokerConfig) -> str:
    """Whose view a page or probe gets: the tenant of the token the request
    carried (on a protected route); without one, while auth is on,
    nobody's (only what is shared); with auth off, the operators'."""
    tenant: str | None = g.get("tpv_tenant")
    if tenant is not None:
        return tenant
    return DEFAULT_TENANT if not config.api.auth_configured else NOBODY


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


def install(app: Flask, settings: ApiSettings, tokens: TokenSet | None) -> None:
    """Guard ``settings.auth_protected`` with ``tokens`` (None: auth off).
    Call once every route is registered: a listed path that is no route
    fails start-up (a typo there would leave the real route open)."""
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    unknown = [p for p in settings.auth_protected if p not in routes]
    if unknown:
        raise ConfigError(f"api.auth_protected: {', '.join(map(repr, unknown))} is not an endpoint of this API "
                          f"(endpoints: {', '.join(sorted(routes - {'/static/<path:filename>'}))})")
    if tokens is None:
        return
    protected = frozenset(settings.auth_protected)

    @app.before_request
    def _require_token() -> tuple[Response, int] | None:
        rule = request.url_rule
        header = request.headers.get("Authorization")
        if rule is None or rule.rule not in protected:
            # An open route (/ready) needs no token, but one that is valid
            # says whose view to give; a wrong one gives nobody's.
            if header is not None and isinstance(opened := check_header(header, tokens), str):
                g.tpv_tenant = opened
            return None
        checked = check_header(header, tokens)
        if isinstance(checked, str):
            g.tpv_tenant = checked
            return None
        code, problem = checked
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr,
                    problem.split(":", 1)[0])
        return _unauthorized(code, problem)
