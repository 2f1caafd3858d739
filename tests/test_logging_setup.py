"""Structured log lines: one line per event, logfmt or JSON, secrets
replaced; the ``logging`` config section."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from tpv_broker.config.settings import load_config
from tpv_broker.errors import ConfigError
from tpv_broker.logging_setup import EventFormatter, configure_logging, event


@pytest.fixture
def emit() -> Iterator:
    """Log one record through a formatter into a string; returns the line."""
    logger = logging.getLogger("tpv_broker.test_logging")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)

    def _emit(fmt: str, secrets: tuple[str, ...] = (), *, level: int = logging.INFO, msg: str = "hello",
              args: tuple = (), exc: bool = False, **extra: object) -> str:
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(EventFormatter(fmt, secrets))  # type: ignore[arg-type]
        logger.addHandler(handler)
        try:
            if exc:
                try:
                    raise ValueError("boom\nsecond line")
                except ValueError:
                    logger.exception(msg, *args, **extra)
            else:
                logger.log(level, msg, *args, **extra)
        finally:
            logger.removeHandler(handler)
        return out.getvalue()

    yield _emit
    logger.propagate = True


def logfmt(line: str) -> dict[str, str]:
    """A small logfmt reader: key=bare or key="json string"."""
    pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


def test_text_line_is_key_value_with_the_event_fields(emit) -> None:
    line = emit("text", msg="cycle %s", args=("published: 12 destinations",),
                extra=event("cycle_done", destinations=12, duration_ms=10.25, outcome="published", age=None,
                            ok=True))
    assert line.count("\n") == 1 and line.endswith("\n")
    assert re.match(r"^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info logger=tpv_broker.test_logging "
                    r'event=cycle_done msg="cycle published: 12 destinations" ', line)
    assert line.rstrip("\n").endswith("destinations=12 duration_ms=10.25 outcome=published age=null ok=true")
    fields = logfmt(line)
    assert fields["msg"] == "cycle published: 12 destinations"
    assert fields["destinations"] == "12"


def test_control_characters_from_an_exporter_go_out_escaped(emit) -> None:
    # A destination id reported with an escape sequence that erases its own line on a terminal, and
    # separators str.splitlines() splits on: the record stays one printable line, the id readable back.
    dest = "pulsar_x\x1b[2K\x1b[1G\x7f\x9b\x85\u2028"
    line = emit("text", msg="destination %s excluded", args=(dest,), extra=event("health_transition",
                                                                                 destination=dest))
    assert line.rstrip("\n").isprintable() and len(line.splitlines()) == 1, repr(line)
    fields = logfmt(line)
    assert fields["destination"] == dest and fields["msg"] == f"destination {dest} excluded"


def test_lines_without_an_event_say_log(emit) -> None:
    assert logfmt(emit("text"))["event"] == "log"
    assert json.loads(emit("json"))["event"] == "log"


def test_json_line_parses_and_carries_the_event_fields(emit) -> None:
    line = emit("json", level=logging.WARNING, msg='a "quoted" word',
                extra=event("cycle_done", destinations=12, duration_ms=10.25, nan=float("nan"), items=["a", 1]))
    assert line.count("\n") == 1
    record = json.loads(line)
    assert record["level"] == "warning"
    assert record["logger"] == "tpv_broker.test_logging"
    assert record["event"] == "cycle_done"
    assert record["msg"] == 'a "quoted" word'
    assert record["destinations"] == 12 and record["duration_ms"] == 10.25
    assert record["nan"] == "nan"  # JSON has no NaN
    assert record["items"] == ["a", 1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_stays_on_one_line(emit, fmt: str) -> None:
    line = emit(fmt, msg="two\nlines", exc=True)
    assert line.count("\n") == 1
    fields = json.loads(line) if fmt == "json" else logfmt(line)
    assert fields["msg"] == "two\nlines"
    assert "Traceback" in fields["exc"] and "ValueError: boom\nsecond line" in fields["exc"]


def test_event_fields_do_not_override_the_standard_ones(emit) -> None:
    record = json.loads(emit("json", extra=event("x", level="spoofed", msg="spoofed", n=1)))
    assert record["level"] == "info" and record["msg"] == "hello" and record["n"] == 1


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_and_url_passwords_never_reach_the_line(emit, fmt: str) -> None:
    secrets = ('pa"ss word', "tok-123456")
    line = emit(fmt, secrets, msg="influx said %s; token %s; redis %s", args=(
        'bad password pa"ss word', "tok-123456", "redis://:hunter2@10.0.0.1:6379/0"),
        extra=event("e", url="https://admin:letmein@influx:8086", other="tok-123456"))
    for leaked in ("pa\"ss word", 'pa\\"ss word', "tok-123456", "hunter2", "letmein"):
        assert leaked not in line
    fields = json.loads(line) if fmt == "json" else logfmt(line)
    assert fields["msg"] == "influx said bad password ***; token ***; redis redis://:***@10.0.0.1:6379/0"
    assert fields["url"] == "https://admin:***@influx:8086"
    assert fields["other"] == "***"


def test_config_secrets_lists_every_credential() -> None:
    cfg = load_config(environ={
        "TPV_BROKER_INFLUXDB_PASSWORD": "influx-pw",
        "TPV_BROKER_INFLUXDB_TOKEN": "influx-token",
        "TPV_BROKER_REDIS_URL": "redis://user:redis%40pw@127.0.0.1:6379/0",
    })
    assert set(cfg.secrets()) >= {"influx-pw", "influx-token", "redis@pw", "redis%40pw"}
    assert load_config(environ={}).secrets() == []


def test_configure_logging_installs_one_handler_and_replaces_it(monkeypatch) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        # Under pytest the root logger has pytest's handlers: left alone, like basicConfig.
        assert root.handlers and configure_logging("DEBUG", "json") is None
        assert root.handlers == before
        first = configure_logging("INFO", "text", stream=io.StringIO(), force=True)
        out = io.StringIO()
        second = configure_logging("WARNING", "json", secrets=["s3cret"], stream=out, force=True)
        ours = [h for h in root.handlers if h not in before]
        assert ours == [second] and first not in root.handlers
        assert root.level == logging.WARNING
        logging.getLogger("tpv_broker.x").warning("the s3cret", extra=event("probe", n=2))
        logging.getLogger("tpv_broker.x").info("not shown at WARNING")
        lines = out.getvalue().splitlines()
        assert [json.loads(x)["msg"] for x in lines] == ["the ***"]
        assert json.loads(lines[0])["n"] == 2
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)


def test_logging_section_from_file_and_environment(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("logging:\n  level: debug\n  format: JSON\n")
    cfg = load_config(path, environ={})
    assert (cfg.logging.level, cfg.logging.format) == ("DEBUG", "json")
    cfg = load_config(path, environ={"TPV_BROKER_LOGGING_FORMAT": "text", "TPV_BROKER_LOGGING_LEVEL": "warning"})
    assert (cfg.logging.level, cfg.logging.format) == ("WARNING", "text")
    assert (load_config(environ={}).logging.level, load_config(environ={}).logging.format) == ("INFO", "text")


@pytest.mark.parametrize("env, problem", [
    ({"TPV_BROKER_LOGGING_FORMAT": "xml"},
     "logging.format (from TPV_BROKER_LOGGING_FORMAT): Input should be 'text' or 'json'"),
    ({"TPV_BROKER_LOGGING_LEVEL": "LOUD"}, "logging.level (from TPV_BROKER_LOGGING_LEVEL): Input should be"),
    ({"TPV_BROKER_COLLECTOR_METRICS_PORT": "70000"}, "collector.metrics_port (from TPV_BROKER_COLLECTOR_METRICS_PORT)"),
])
def test_bad_logging_and_metrics_settings_are_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(environ=env)
    assert problem in str(e.value)
