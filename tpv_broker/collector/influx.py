"""A minimal InfluxQL client over InfluxDB's 1.x HTTP query API (served by
InfluxDB 1.x, and by 2.x/3.x as their v1-compatible endpoint).

All statements of a cycle go in one HTTP request, so a cycle costs one round
trip whatever the number of destinations and tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import requests

from ..shared.config import CollectorSettings, InfluxDBSettings
from ..shared.errors import MetricSourceError
from ..shared.preset_spec import PresetSpec
from ..shared.urls import redact_url, scrub, url_secrets
from .rows import ReadResult, Row

if TYPE_CHECKING:
    from .presets import Preset


@dataclass(frozen=True)
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, v)) for v in self.values]


@dataclass(frozen=True)
class StatementResult:
    series: list[Series] = field(default_factory=list)
    error: str | None = None


def quote_ident(name: str) -> str:
    """Measurement, tag and field names come from our presets, never from a
    request; quoting still keeps names like ``destination-queue-run-time`` valid."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ms(seconds: float) -> str:
    """An InfluxQL duration literal; milliseconds keep sub-second settings."""
    return f"{max(1, round(seconds * 1000))}ms"


MAX_CLOCK_SKEW_S = 300.0


def _window(lookback_s: float) -> str:
    # The upper bound matters: a point stamped in the future (a Galaxy host
    # with a skewed clock, a wrong write precision) would otherwise win
    # last() and hide every real update until its time came.
    return f"time > now() - {_ms(lookback_s)} AND time <= now() + {_ms(MAX_CLOCK_SKEW_S)}"


def influxql_statement(spec: PresetSpec, s: CollectorSettings) -> str:
    """One statement for every destination: GROUP BY the preset's tags, the
    newest point of each group; or, for an id held in a field (which cannot
    be grouped by), every row of the window (sites x minutes: few)."""
    where = _window(spec.window_s(s.lookback_s, s.stats_lookback_s))
    measurement = quote_ident(spec.measurement)
    if spec.read == "all_rows":
        return f"SELECT * FROM {measurement} WHERE {where}"
    fields = spec.field_names()
    group_by = ", ".join(quote_ident(t) for t in spec.tags_used())
    if len(fields) == 1:
        # last() skips points without the field; its time is the point's.
        f = quote_ident(fields[0])
        return f"SELECT last({f}) AS {f} FROM {measurement} WHERE {where} GROUP BY {group_by}"
    # Several selectors in one statement would lose the points' times.
    selected = ", ".join(quote_ident(f) for f in fields)
    return f"SELECT {selected} FROM {measurement} WHERE {where} GROUP BY {group_by} ORDER BY time DESC LIMIT 1"


def series_rows(series: Sequence[Series], spec: PresetSpec) -> list[Row]:
    """InfluxQL series (asked with epoch=s) as rows: one per value row."""
    out = []
    for ser in series:
        for row in ser.rows():
            at = row.pop("time", None)
            out.append(Row(at=at if isinstance(at, (int, float)) and not isinstance(at, bool) else None,
                           tags=ser.tags, values=row))
    return out


class InfluxQLClient:
    def __init__(self, settings: InfluxDBSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        self.base = settings.url.rstrip("/")
        self.session.verify = settings.verify_tls
        if settings.token is not None:
            self.session.headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
        elif settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else ""
            self.session.auth = (settings.username, password)

    def _clean(self, text: str) -> str:
        # requests quotes URLs and header values it rejects in its messages.
        s = self.settings
        secrets = [s.password.get_secret_value() if s.password else None,
                   s.token.get_secret_value() if s.token else None, *url_secrets(s.url)]
        return scrub(text, secrets)

    @property
    def where(self) -> str:
        return f"InfluxDB at {redact_url(self.base)} (database {self.settings.database!r})"

    def query(self, statements: Sequence[str]) -> list[StatementResult]:
        """Run the statements in one request. A failing statement does not
        discard the others: its result carries the error."""
        try:
            resp = self.session.post(
                f"{self.base}/query",
                data={"db": self.settings.database, "q": ";\n".join(statements), "epoch": "s"},
                timeout=self.settings.timeout_s,
            )
        except requests.Timeout:
            raise MetricSourceError(f"{self.where} did not answer within {self.settings.timeout_s:g} s") from None
        except requests.exceptions.InvalidURL:
            # Its message quotes whatever it took for the host, which can be
            # a piece of a password with an unescaped / # or ? in it.
            raise MetricSourceError(f"{self.where}: the URL cannot be parsed "
                                    "(%-encode / # ? @ and % in a user name or password)") from None
        except requests.ConnectionError as e:
            raise MetricSourceError(f"{self.where} is unreachable: {self._clean(_short(e))}") from None
        except (requests.RequestException, ValueError) as e:
            # ValueError: an unusable header value (a token with a newline in it).
            raise MetricSourceError(f"{self.where}: request failed: {self._clean(_short(e))}") from None
        if resp.status_code in (401, 403):
            raise MetricSourceError(f"{self.where} refused the credentials (HTTP {resp.status_code})")
        try:
            body = resp.json()
        except ValueError:
            raise MetricSourceError(
                f"{self.where} answered HTTP {resp.status_code} with a body that is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise MetricSourceError(f"{self.where} answered with unexpected JSON")
        if "error" in body:
            raise MetricSourceError(f"{self.where} answered an error: {self._clean(str(body['error']))}")
        if resp.status_code != 200:
            raise MetricSourceError(f"{self.where} answered HTTP {resp.status_code}")
        results: list[StatementResult] = [StatementResult(error="no result") for _ in statements]
        for item in body.get("results") or []:
            try:
                idx = int(item.get("statement_id", -1))
            except (TypeError, ValueError):
                continue
            if not 0 <= idx < len(statements):
                continue
            if item.get("error"):
                results[idx] = StatementResult(error=str(item["error"]))
                continue
            try:
                results[idx] = StatementResult(
                    series=[
                        Series(
                            name=str(s.get("name", "")),
                            tags=dict(s.get("tags") or {}),
                            columns=list(s["columns"]),
                            values=list(s.get("values") or []),
                        )
                        for s in item.get("series") or []
                    ]
                )
            except (KeyError, TypeError) as e:
                results[idx] = StatementResult(error=f"malformed series in the answer: {e}")
        return results


    def read(self, presets: Sequence[Preset], s: CollectorSettings) -> list[ReadResult]:
        """Every preset in one request; a preset whose statement failed carries the error."""
        results = self.query([p.statement(s) for p in presets])
        return [
            ReadResult(error=r.error) if r.error is not None else ReadResult(rows=series_rows(r.series, p.spec))
            for p, r in zip(presets, results)
        ]

    def database_problem(self) -> str | None:
        """Why every statement failed, when it is the database itself: InfluxDB
        1.x answers a multi-statement query on a missing database with a bare
        "not executed"."""
        try:
            resp = self.session.post(f"{self.base}/query", data={"q": "SHOW DATABASES"}, timeout=self.settings.timeout_s)
            series = resp.json()["results"][0].get("series") or []
            names = {row[0] for s in series for row in s.get("values") or []}
        except (requests.RequestException, ValueError, KeyError, IndexError, TypeError):
            return None
        if self.settings.database in names:
            return None
        known = ", ".join(sorted(names)) or "none"
        return f"database {self.settings.database!r} does not exist on {redact_url(self.base)} (databases there: {known})"


def _short(exc: Exception) -> str:
    # requests wraps urllib3 errors several levels deep; the innermost
    # reason is what an admin needs.
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200]
