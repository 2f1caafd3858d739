"""The call a rank clause makes: TPV's candidates in, the same objects out,
in the broker's order when it gave one in time, else in TPV's.

TPV runs a rank clause synchronously in the thread that dispatches Galaxy's
waiting jobs and catches nothing around it: an exception fails the job, a
hang stalls dispatch. So ``rank`` never raises and never waits past its
budget; every way of not getting a usable answer logs one warning and
returns TPV's default order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from .breaker import Breaker
from .order import apply_answer, default_order
from .request import Unsendable, datasets_section, destinations_section, job_section, object_stores_section
from .transport import CallFailed, DeadlineAdapter, post_json, run_until

log = logging.getLogger("tpv_broker_client")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_BUDGET_S = 0.5
DEFAULT_FAILURES_TO_OPEN = 5
DEFAULT_COOLDOWN_S = 30.0
# The API's answer for its largest request (1000 candidates) is far smaller.
MAX_ANSWER_BYTES = 1 << 20
# Where the token comes from when the clause does not pass one (Galaxy's
# environment, e.g. its systemd unit), so it need not sit in a TPV config.
TOKEN_ENV = "TPV_BROKER_TOKEN"
TOKEN_FILE_ENV = "TPV_BROKER_TOKEN_FILE"
# What the API accepts after "Bearer " (RFC 6750's token68).
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _read_token(token: str | None, token_file: str | None) -> str | None:
    """The API token: ``token``, else the first line of ``token_file``, else
    $TPV_BROKER_TOKEN, else $TPV_BROKER_TOKEN_FILE's file; None for none.
    Errors name where the token came from, never the token."""
    source = "token"
    if token is None and token_file is None:
        token, token_file = os.environ.get(TOKEN_ENV) or None, os.environ.get(TOKEN_FILE_ENV) or None
        source = TOKEN_ENV
    if token is None and token_file is not None:
        source = f"token file {token_file}"
        try:
            with open(token_file, encoding="utf-8") as f:
                lines = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise ValueError(f"cannot read the {source}: {why}") from None
        if not lines:
            raise ValueError(f"the {source} holds no token")
        token = lines[0]
    if token is None:
        return None
    if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
        raise ValueError(f"the {source} is not a bearer token (A-Z a-z 0-9 - . _ ~ + / and = at the end)")
    return token


def _answer_ids(status: int, body: bytes) -> list[str]:
    """The ranked ids from an answer, or CallFailed saying what was wrong with it."""
    if status != 200:
        raise CallFailed(f"answered HTTP {status}: {body[:200].decode('utf-8', 'replace').strip()}")
    try:
        answer = json.loads(body)
    except ValueError:
        raise CallFailed(f"answered something that is not JSON: {body[:80]!r}") from None
    if not isinstance(answer, dict):
        raise CallFailed(f"answered JSON that is not an object: {body[:80]!r}")
    if not isinstance(answer.get("degraded"), bool):
        raise CallFailed(f"answered without a degraded flag: {body[:80]!r}")
    if answer["degraded"]:
        # The broker falls back to TPV's order itself (no or stale snapshot,
        # Redis down) and says so; ours is the same order, without the trip.
        raise CallFailed(f"answered degraded: {answer.get('degraded_reason', 'no reason given')}")
    ids = answer.get("destinations")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CallFailed(f"answered without a list of destination ids: {body[:80]!r}")
    return ids


class BrokerClient:
    """One broker, one HTTP session and one breaker; share it across jobs
    (``client_for`` keeps one per process)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        budget_s: float = DEFAULT_BUDGET_S,
        failures_to_open: int = DEFAULT_FAILURES_TO_OPEN,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        object_stores: Mapping[str, Any] | None = None,
        verify: bool | str = True,
        token: str | None = None,
        token_file: str | None = None,
    ) -> None:
        if not budget_s > 0:
            raise ValueError(f"budget_s must be positive, got {budget_s}")
        bearer = _read_token(token, token_file)
        self.url = url.rstrip("/") + "/api/rank"
        self.budget_s = float(budget_s)
        self.breaker = Breaker(failures_to_open, cooldown_s)
        self.object_stores = object_stores_section(object_stores)
        self.session = requests.Session()
        # No proxies or .netrc from the environment: the broker sits next to
        # Galaxy, and reading them costs time on every request.
        self.session.trust_env = False
        self.session.verify = verify
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, DeadlineAdapter())
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()
        if bearer is not None:
            self.session.headers["Authorization"] = f"Bearer {bearer}"
            host = urlsplit(self.url).hostname or ""
            if self.url.startswith("http://") and host not in _LOOPBACK:
                self._warn_once(f"the API token goes to {host} over plain http: "
                                "anyone on the path can read it; use https")

    # -- the call -------------------------------------------------------
    def rank(self, candidates: Sequence[Any], namespace: Mapping[str, Any]) -> list[Any]:
        """``candidates`` (TPV's ``candidate_destinations``) reordered; the
        facts come from ``namespace`` (the clause's ``globals()``): ``entity``,
        ``tool``, ``job``, ``helpers`` and, if set, ``cores``, ``mem``, ``gpus``."""
        deadline = time.monotonic() + self.budget_s
        if not isinstance(namespace, Mapping):
            namespace = {}
        try:
            ordered, scores = default_order(candidates, namespace.get("entity"))
        except Exception:
            # Only if candidates cannot even be listed; TPV never does that.
            log.warning("tpv-broker: candidates are not a list: %r", candidates, exc_info=True)
            # Handed back as TPV gave them, whatever they are.
            return candidates  # type: ignore[return-value]
        if not ordered:
            return ordered
        try:
            return self._ask(ordered, scores, namespace, deadline)
        except Exception:
            log.warning("tpv-broker client error, TPV's order used", exc_info=True)
            return ordered

    def _ask(
        self, ordered: list[Any], scores: list[int | None], namespace: Mapping[str, Any], deadline: float
    ) -> list[Any]:
        try:
            job = job_section(namespace)
            destinations = self._destinations(ordered, scores)
        except Unsendable as exc:
            log.warning("tpv-broker not asked, TPV's order used: %s", exc)
            return ordered
        # Checked before the inputs are read: while the breaker is open a job
        # costs nothing, not even a look at its datasets.
        if not self.breaker.allow():
            log.debug("tpv-broker not asked (breaker open), TPV's order used")
            return ordered
        # From here on every path records a success or a failure, or a
        # probe the breaker let through would keep it half-open for ever.
        try:
            payload = self._payload(job, destinations, namespace)
            if deadline - time.monotonic() < self.budget_s * _LEAST_LEFT:
                # Galaxy's own lookup of the inputs took (nearly all) the
                # budget: the broker was not asked, or given no time to
                # answer, so it has not failed.
                self.breaker.release()
                log.warning("tpv-broker not asked: reading the job's inputs took the %g s budget; TPV's "
                            "order used", self.budget_s)
                return ordered
            status, answer = run_until(
                deadline, lambda: post_json(self.session, self.url, payload, deadline, MAX_ANSWER_BYTES), self.budget_s
            )
            ranked = apply_answer(ordered, [d["id"] for d in destinations], _answer_ids(status, answer))
            if ranked is None:
                raise CallFailed(f"answered ids that do not match the candidates: {answer[:200]!r}")
        except CallFailed as exc:
            self._failed(str(exc))
            return ordered
        except Exception as exc:  # noqa: BLE001 - a bug here must not fail the job
            self._failed(f"could not be asked ({exc!r})", exc_info=True)
            return ordered
        if self.breaker.success():
            log.info("tpv-broker at %s answers again: ranking by it resumed", self.url)
        return ranked

    def _failed(self, why: str, exc_info: bool = False) -> None:
        # One warning per job, whatever happened; the one that opens the
        # breaker says so, and jobs skipped while it is open log nothing.
        opened = ""
        if self.breaker.failure():
            opened = (
                f". {self.breaker.failures_to_open} failures in a row: "
                f"not asking it again for {self.breaker.cooldown_s:g} s"
            )
        log.warning("tpv-broker at %s %s; TPV's order used%s", self.url, why, opened, exc_info=exc_info)

    def _destinations(self, ordered: list[Any], scores: list[int | None]) -> list[dict[str, Any]]:
        destinations, left_out = destinations_section(ordered, scores)
        if left_out:
            self._warn_once(
                f"destination ids {', '.join(left_out)} cannot be sent to the broker: "
                "they are placed after the ones it ranks"
            )
        if not destinations:
            raise Unsendable("no candidate has an id the broker accepts")
        return destinations

    def _payload(self, job: dict[str, Any], destinations: list[dict[str, Any]], namespace: Mapping[str, Any]) -> bytes:
        body: dict[str, Any] = {"job": job, "destinations": destinations}
        try:
            datasets = datasets_section(namespace)
        except Exception as exc:  # noqa: BLE001 - rank without locality rather than not at all
            # Once per kind of error: the text names datasets, new in every job.
            self._warn_once(f"input datasets could not be read, ranking without them: {type(exc).__name__}")
            log.debug("tpv-broker: input datasets could not be read: %r", exc)
            datasets = []
        if datasets:
            body["datasets"] = datasets
        if self.object_stores:
            body["object_stores"] = self.object_stores
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def _warn_once(self, message: str) -> None:
        # Problems of the config rather than of the broker: said once per
        # process, not once per job.
        with self._warned_lock:
            if message in self._warned:
                return
            self._warned.add(message)
        log.warning("tpv-broker: %s", message)


# Asking the broker with less of the budget left than this share would time
# out and count against it: a rank answer takes a few milliseconds over a
# network, a tenth of the default 0.5 s budget is 50 ms.
_LEAST_LEFT = 0.1


# -- one client per process ---------------------------------------------
_clients: dict[tuple[Any, ...], BrokerClient] = {}
_clients_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # A lock another thread of the parent held at the fork stays held in
    # the child, where no thread will release it.
    global _clients_lock
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def client_for(**settings: Any) -> BrokerClient:
    """The process's client for these ``BrokerClient`` settings, made on
    first use, so every job reuses its connections and its breaker. Keyed by
    process id too: a forked child must not share its parent's sockets."""
    key = (os.getpid(), json.dumps(settings, sort_keys=True, default=repr))
    client = _clients.get(key)
    if client is None:
        # Made outside the lock: a process forked while another thread held
        # it (reading a slow token file) would wait on it for ever. Two
        # threads may both make one; the first kept is every job's.
        made = BrokerClient(**settings)
        with _clients_lock:
            client = _clients.setdefault(key, made)
    return client


def rank(candidate_destinations: Sequence[Any], namespace: Mapping[str, Any], **settings: Any) -> list[Any]:
    """For a TPV rank clause: ``rank(candidate_destinations, globals(), url=...)``;
    ``settings`` are ``BrokerClient``'s (``url``, ``budget_s``,
    ``failures_to_open``, ``cooldown_s``, ``object_stores``, ``verify``,
    ``token`` or ``token_file``: the API's bearer token, if it requires one;
    without them, $TPV_BROKER_TOKEN or the file $TPV_BROKER_TOKEN_FILE names).

    Returns every candidate exactly once, in the broker's order, those it did
    not rank after them in TPV's default order; TPV's default order whenever
    the broker does not answer usefully within ``budget_s`` seconds. Never
    raises, whatever the arguments (a misspelt setting included).
    """
    try:
        client = client_for(**settings)
    except Exception:
        log.warning("tpv-broker client settings rejected, TPV's order used", exc_info=True)
        entity = namespace.get("entity") if isinstance(namespace, Mapping) else None
        try:
            return default_order(candidate_destinations, entity)[0]
        except Exception:  # noqa: BLE001 - candidates that cannot even be listed
            # As TPV gave them, whatever they are.
            return candidate_destinations  # type: ignore[return-value]
    return client.rank(candidate_destinations, namespace)
