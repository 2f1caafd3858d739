"""Structured logs: one line per event, ``key=value`` (logfmt) or JSON.

A log call names its event and fields with ``extra=event(...)``::

    log.info("cycle %s", report.summary(), extra=event("cycle_done", destinations=12, duration_ms=10.3))

which prints (text, one line; wrapped here)::

    time=2026-11-22T04:43:25.123Z level=info logger=tpv_broker.collector event=cycle_done
    msg="cycle published: ..." destinations=12 duration_ms=10.3

Lines from other libraries (gunicorn, APScheduler) carry ``event=log``.
A traceback is kept on the same line (escaped), so a line is an event.
Configured secrets (passwords, tokens, the password of a Redis URL) and any
``user:password@`` in a URL are replaced by ``***`` before a line is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

_EVENT = "tpv_event"
_FIELDS = "tpv_fields"
# Marks the handler this module installed, so configuring again replaces it
# and never touches handlers someone else (pytest, an embedding app) added.
_OURS = "_tpv_broker_handler"
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
_BARE = re.compile(r"^[^\s\"=\\]+$")
# What json.dumps(ensure_ascii=False) leaves raw that is no printable text.
_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029]")


def event(name: str, **fields: Any) -> dict[str, Any]:
    """The ``extra`` of a log call: the event's name and its fields."""
    return {_EVENT: name, _FIELDS: fields}


def _logfmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else str(value)
    if text and _BARE.match(text) and text.isprintable():
        return text
    # Ids come from exporters: a control character (an escape sequence that
    # erases the line on a terminal, a separator splitlines() splits on)
    # goes out escaped, as \n does.
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", json.dumps(text, ensure_ascii=False))


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # JSON has no NaN or infinity.
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


class EventFormatter(logging.Formatter):
    """Renders a record as one line: logfmt (``text``) or one JSON object."""

    def __init__(self, fmt: LogFormat = "text", secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.fmt = fmt
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """Everything the line says, in order."""
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, _EVENT, None) or "log",
            "msg": record.getMessage(),
        }
        for key, value in (getattr(record, _FIELDS, None) or {}).items():
            if key not in out:
                out[key] = value
        if record.levelno >= logging.WARNING and record.name.startswith("gunicorn"):
            out["pid"] = record.process
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return out

    def format(self, record: logging.LogRecord) -> str:
        # Redacted before quoting, so a secret with quotes in it is still found.
        fields = {k: self.redact(v) if isinstance(v, str) else v for k, v in self.fields(record).items()}
        if self.fmt == "json":
            return json.dumps({k: _json_value(v) for k, v in fields.items()}, ensure_ascii=False)
        # Quoted values escape newlines, so a traceback stays on the line.
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


def configure_logging(
    level: str = "INFO",
    fmt: LogFormat = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    force: bool = False,
) -> logging.Handler | None:
    """Route the root logger to one stderr handler with ``EventFormatter``.

    Like ``logging.basicConfig``, does nothing when the root logger already
    has handlers that are not ours (unless ``force``): an embedding process
    (pytest's capture, a WSGI host) keeps its own. Calling it again replaces
    the handler it installed (e.g. once the config file has been read)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _OURS, False)]
    if len(ours) < len(root.handlers) and not force:
        return None
    for h in ours:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _OURS, True)
    handler.setFormatter(EventFormatter(fmt, secrets))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler logs three INFO lines per cycle; ours says what matters.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    return handler


class OutageLog:
    """A trouble that repeats on every call while it lasts (Redis down for
    every charge) is logged once when it starts and once when it ends, with
    how many calls it hit meanwhile. Thread-safe: gthread workers run
    several requests at once."""

    def __init__(self, logger: logging.Logger, name: str, started: str, ended: str, count_field: str) -> None:
        # ``started`` takes the error (%s); ``ended`` the number of calls hit
        # (%d), also the recovery event's ``count_field``.
        self.logger, self.name, self.started, self.ended = logger, name, started, ended
        self.count_field = count_field
        self._lock = threading.Lock()
        self._failing = False
        self._hit = 0

    def failed(self, error: object) -> None:
        with self._lock:
            self._hit += 1
            if self._failing:
                return
            self._failing = True
        self.logger.warning(self.started, error, extra=event(f"{self.name}_failed"))

    def succeeded(self) -> None:
        if not self._failing:  # the usual case, without the lock
            return
        with self._lock:
            if not self._failing:
                return
            hit, self._failing, self._hit = self._hit, False, 0
        self.logger.info(self.ended, hit, extra=event(f"{self.name}_recovered", **{self.count_field: hit}))
