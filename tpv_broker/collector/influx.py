"""A minimal InfluxQL client over InfluxDB's 1.x HTTP query API (served by
InfluxDB 1.x, and by 2.x/3.x as their v1-compatible endpoint).

All statements of a cycle go in one HTTP request, so a cycle costs one round
trip whatever the number of destinations and tools.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
import urllib3

from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.server_settings import InfluxDBSettings
from tpv_broker.config.urls import redact_url, scrub
from tpv_broker.errors import URL_UNPARSABLE, MetricSourceError, MetricSourceTimeout, network_reason

from .influxql import Series, series_rows
from .rows import ReadResult

if TYPE_CHECKING:
    from .presets import Preset


@dataclass(frozen=True)
class StatementResult:
    series: list[Series] = field(default_factory=list)
    error: str | None = None
    # Oddities that did not make the result unusable (values read as missing).
    warnings: tuple[str, ...] = ()


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

    def scrubbed(self, text: str) -> str:
        """``text`` without this source's credentials."""
        # requests quotes URLs and header values it rejects in its messages.
        return scrub(text, self.settings.secrets())

    @property
    def where(self) -> str:
        return f"InfluxDB at {redact_url(self.base)} (database {self.settings.database!r})"

    def query(self, statements: Sequence[str], chunked: bool = False) -> list[StatementResult]:
        """Run the statements in one request. A failing, cut-off or garbled
        statement does not discard the others: its result carries the error.
        Raises MetricSourceError only when the answer as a whole is unusable.

        ``chunked``: InfluxDB answers in several documents (joined here) and
        its max-row-limit, which applies per series otherwise, does not cut it."""
        form = {"db": self.settings.database, "q": ";\n".join(statements), "epoch": "s"}
        if chunked:
            form["chunked"] = "true"
        try:
            resp = self.session.post(
                f"{self.base}/query",
                data=form,
                timeout=self.settings.timeout_s,
                stream=True,
            )
            try:
                raw, cut_off = self._read_body(resp)
            finally:
                resp.close()
        except requests.Timeout:
            raise MetricSourceTimeout(f"{self.where} did not answer within {self.settings.timeout_s:g} s") from None
        except requests.exceptions.InvalidURL:
            raise MetricSourceError(f"{self.where}: {URL_UNPARSABLE}") from None
        except requests.ConnectionError as e:
            raise MetricSourceError(f"{self.where} is unreachable: {network_reason(e, self.scrubbed)}") from None
        except (requests.RequestException, ValueError) as e:
            # ValueError: an unusable header value (a token with a newline in it).
            raise MetricSourceError(f"{self.where}: request failed: {network_reason(e, self.scrubbed)}") from None
        if resp.status_code in (401, 403):
            raise MetricSourceError(f"{self.where} refused the credentials (HTTP {resp.status_code})")
        documents, problem = _json_documents(raw)
        if not documents:
            what = f"HTTP {resp.status_code} ({resp.headers.get('Content-Type') or 'no content type'})"
            if cut_off:
                raise MetricSourceError(f"{self.where} closed the connection after {len(raw)} bytes, "
                                        f"before its answer ({what}) was complete")
            raise MetricSourceError(
                f"{self.where} answered {what} with a body that is not JSON ({problem}): {_excerpt(raw)}"
            )
        for body in documents:
            if not isinstance(body, dict):
                raise MetricSourceError(
                    f"{self.where} answered with unexpected JSON: {_kind(body)}, not an object"
                )
            if "error" in body:
                error = self.scrubbed(_clean(str(body["error"]), 300))
                raise MetricSourceError(f"{self.where} answered an error: {error}")
        if resp.status_code != 200:
            raise MetricSourceError(f"{self.where} answered HTTP {resp.status_code}")
        missing = "its answer was cut off before this statement" if (cut_off or problem) else "no result in the answer"
        return _statement_results(documents, len(statements), missing)

    def _read_body(self, resp: requests.Response) -> tuple[bytes, bool]:
        """The body, read within the time limit as a whole: a server that
        trickles bytes must not hold a cycle longer than one read timeout past
        it. Also says whether the connection closed before the body was complete."""
        limit = self.settings.timeout_s
        deadline = time.monotonic() + limit
        chunks: list[bytes] = []
        while True:
            try:
                # read1: whatever has arrived, so the deadline is checked between reads.
                chunk = resp.raw.read1(_READ_CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                raise requests.Timeout() from None
            except urllib3.exceptions.ProtocolError:
                return b"".join(chunks), True
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise requests.ConnectionError(e) from None
            if not chunk:
                # read1 does not check the announced length: a connection
                # closed early looks like the end of the body.
                return b"".join(chunks), bool(getattr(resp.raw, "length_remaining", None))
            chunks.append(chunk)
            if time.monotonic() > deadline:
                # No byte count: the same trouble must read the same, to be logged once.
                raise MetricSourceTimeout(f"{self.where} did not finish its answer within {limit:g} s")

    def read(self, presets: Sequence[Preset], s: CollectorSettings) -> list[ReadResult]:
        """Every preset in one request; a preset whose statement failed carries the error."""
        # Every point since a time comes in one series (``points_since``).
        results = self.query([p.statement(s) for p in presets],
                             chunked=any(p.since_s is not None for p in presets))
        return [
            ReadResult(error=r.error) if r.error is not None
            else ReadResult(rows=series_rows(r.series), warnings=r.warnings)
            for p, r in zip(presets, results, strict=True)
        ]

    def database_problem(self) -> str | None:
        """Why every statement failed, when it is the database itself: InfluxDB
        1.x answers a multi-statement query on a missing database with a bare
        "not executed"."""
        try:
            resp = self.session.post(f"{self.base}/query", data={"q": "SHOW DATABASES"},
                                     timeout=self.settings.timeout_s)
            series = resp.json()["results"][0].get("series") or []
            names = {row[0] for s in series for row in s.get("values") or []}
        except (requests.RequestException, ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None
        if self.settings.database in names:
            return None
        known = ", ".join(sorted(names)) or "none"
        return (f"database {self.settings.database!r} does not exist on {redact_url(self.base)} "
                f"(databases there: {known})")


_READ_CHUNK = 1 << 16


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _excerpt(raw: bytes | str, limit: int = 120) -> str:
    """The start of a body, printable and short: enough to recognise a
    proxy's error page, never a whole document in a log line."""
    text = _clean(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw, limit)
    return repr(text) if text else "(empty)"


def _clean(text: str, limit: int) -> str:
    text = "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))
    return text[:limit] + ("..." if len(text) > limit else "")


def _json_documents(raw: bytes) -> tuple[list[Any], str | None]:
    """The JSON documents in a body (one, or several when InfluxDB answers
    in chunks), and what is wrong with the rest of it, if anything."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [], f"not UTF-8 at byte {e.start}"
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return documents, None if documents else "empty body"
        try:
            document, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            ends_early = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated")
            return documents, "it ends early: cut off?" if ends_early else f"{e.msg} at byte {e.pos}"
        documents.append(document)


def _statement_results(documents: list[Any], count: int, missing: str) -> list[StatementResult]:
    """One result per statement. Chunks of one statement are joined; a
    statement whose last chunk still says ``"partial": true`` is incomplete
    (InfluxDB's max-row-limit, or an answer that ended early) and is
    reported as such, never used: missing rows would read as zero jobs."""
    series: dict[int, list[Series]] = {}
    errors: dict[int, str] = {}
    warnings: dict[int, list[str]] = {}
    partial: dict[int, bool] = {}
    for document in documents:
        items = document.get("results", [])
        if not isinstance(items, list):
            return [StatementResult(error=f"malformed answer: 'results' is {_kind(items)}, not a list")] * count
        for item in items:
            if not isinstance(item, dict):
                continue
            idx = item.get("statement_id")
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < count or idx in errors:
                continue
            if item.get("error"):
                errors[idx] = _clean(str(item["error"]), 300)
                continue
            try:
                parsed, notes = _parse_series(item.get("series"))
            except _Malformed as e:
                errors[idx] = f"malformed answer: {e}"
                continue
            series.setdefault(idx, []).extend(parsed)
            warnings.setdefault(idx, []).extend(notes)
            partial[idx] = item.get("partial") is True or any(s.get("partial") is True
                                                               for s in item.get("series") or [])
    results = []
    for idx in range(count):
        if idx in errors:
            results.append(StatementResult(error=errors[idx]))
        elif idx not in partial:
            results.append(StatementResult(error=missing))
        elif partial[idx]:
            results.append(StatementResult(error='InfluxDB sent only part of the answer ("partial": true, '
                                                 "e.g. cut by its max-row-limit): not used"))
        else:
            results.append(StatementResult(series=_join_chunks(series[idx]), warnings=tuple(warnings[idx])))
    return results


class _Malformed(ValueError):
    pass


def _parse_series(raw: Any) -> tuple[list[Series], list[str]]:
    """Series checked for the shape InfluxDB gives them, so the presets get
    plain data: names and tag values are strings, each row has one value per
    column, and no value is a list or an object. NaN and infinities (which
    InfluxDB never stores) are read as missing, and said so; so are columns
    that mix numbers and text (a field type conflict between shards, or a
    garbled answer: the presets read such text as missing)."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        raise _Malformed(f"'series' is {_kind(raw)}, not a list")
    out, notes = [], []
    non_finite = 0
    kinds: dict[str, set[str]] = {}
    for i, s in enumerate(raw):
        if not isinstance(s, dict):
            raise _Malformed(f"series[{i}] is {_kind(s)}, not an object")
        name, tags, columns, values = s.get("name", ""), s.get("tags") or {}, s.get("columns"), s.get("values") or []
        if not isinstance(name, str):
            raise _Malformed(f"series[{i}].name is {_kind(name)}, not a string")
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise _Malformed(f"series[{i}].tags is not an object of strings")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise _Malformed(f"series[{i}].columns is not a list of strings")
        if not isinstance(values, list):
            raise _Malformed(f"series[{i}].values is {_kind(values)}, not a list")
        for j, row in enumerate(values):
            if not isinstance(row, list) or len(row) != len(columns):
                what = f"{len(row)} values" if isinstance(row, list) else f"{_kind(row)}"
                raise _Malformed(f"series[{i}].values[{j}] has {what} for {len(columns)} columns")
        # Column by column: a large answer has tens of thousands of values,
        # and the type of each is all most of them need checking for.
        rows = [list(row) for row in values]
        for c, column in enumerate(zip(*rows, strict=True)):
            types = set(map(type, column))
            if list in types or dict in types:
                j = next(j for j, v in enumerate(column) if isinstance(v, (list, dict)))
                raise _Malformed(f"series[{i}].values[{j}] holds {_kind(column[j])}")
            if float in types and not all(map(math.isfinite, [v for v in column if type(v) is float])):
                for row in rows:
                    if type(row[c]) is float and not math.isfinite(row[c]):
                        row[c] = None
                        non_finite += 1
                types = {type(row[c]) for row in rows}
            types -= {bool, type(None)}
            if types:
                kinds.setdefault(columns[c], set()).update("text" if t is str else "number" for t in types)
        out.append(Series(name=name, tags=dict(tags), columns=list(columns), values=rows))
    if non_finite:
        notes.append(f"{non_finite} value(s) NaN or infinite, read as missing")
    notes.extend(f"column {c!r} mixes numbers and text" for c, k in sorted(kinds.items()) if len(k) > 1)
    return out, notes


def _join_chunks(series: list[Series]) -> list[Series]:
    """Chunked answers split one series over several chunks: join them."""
    joined: dict[tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]], Series] = {}
    for s in series:
        key = (s.name, tuple(sorted(s.tags.items())), tuple(s.columns))
        if key in joined:
            joined[key].values.extend(s.values)
        else:
            joined[key] = Series(s.name, s.tags, s.columns, list(s.values))
    return list(joined.values())
