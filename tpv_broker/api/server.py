"""Serving the app with gunicorn, configured from our config object rather
than a gunicorn.conf.py, so ``tpv-broker serve`` needs nothing else."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.errors import BrokerError

from . import auth
from .app import create_app

log = logging.getLogger("tpv_broker.api")


class _Gunicorn(BaseApplication):
    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
        # Options newer gunicorns added are skipped on older ones.
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    # types-gunicorn types a WSGI app's environ as a MutableMapping, Flask
    # (after typeshed's WSGI types) as a dict: the same object at run time.
    def load(self) -> Flask:  # type: ignore[override]
        # Called in each worker after the fork (no preload), so every worker
        # opens its own Redis connection pool.
        return self.factory()


def gunicorn_options(bind: str, workers: int) -> dict[str, Any]:
    """The settings the API is deployed with (the benchmarks serve their
    comparison apps with exactly these, too)."""
    return {
        "bind": bind,
        "workers": workers,
        # gthread keeps connections alive (sync closes them after every
        # request, so each rank request paid a TCP connect). One thread per
        # worker: a request is CPU-bound Python, and a second thread only
        # queues behind the GIL after each Redis round trip. Measured in
        # bench/: sync < gthread x 2 threads < gthread x 1 thread.
        "worker_class": "gthread",
        "threads": 1,
        # Rank requests take about a millisecond; a request still running
        # after this long is stuck and its worker is replaced.
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": None,
        "errorlog": "-",
        "proc_name": "tpv-broker-api",
        # gunicorn 24+ opens a control socket at one per-user path by
        # default; a second instance would take it over from the first.
        "control_socket_disable": True,
    }


def serve_app(factory: Callable[[], Flask], bind: str, workers: int) -> None:
    """Any app factory under the deployed gunicorn settings."""
    _Gunicorn(factory, gunicorn_options(bind, workers)).run()


class StructuredGunicornLogger(glogging.Logger):
    """gunicorn's own lines (booting, worker timeouts, errors) through the
    root logger, so they come out in the configured format (text or JSON)
    like ours, instead of gunicorn's own."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if not logging.getLogger().handlers:
            return  # nobody configured logging: keep gunicorn's handlers
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                if getattr(handler, "_gunicorn", False):
                    log.removeHandler(handler)
            log.propagate = True


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's name, read by api/metrics.py


@contextmanager
def metrics_directory(parent: str | None) -> Iterator[str]:
    """A fresh directory for this run's worker metrics (prometheus_client
    multiprocess mode), in the environment the workers inherit; removed at
    exit. Fresh per run, so counts never carry over from an earlier run or
    mix with another instance's."""
    try:
        if parent is not None:
            os.makedirs(parent, exist_ok=True)
        path = tempfile.mkdtemp(prefix="tpv-broker-metrics-", dir=parent)
    except OSError as e:
        where = parent if parent is not None else tempfile.gettempdir()
        raise BrokerError(f"api.metrics_dir: cannot create the metrics directory in {where}: "
                          f"{e.strerror or e}") from None
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = path
    owner = os.getpid()
    try:
        yield path
    finally:
        # gunicorn forks its workers inside this block, and a worker that
        # exits normally (a reload, a timeout, a crash) unwinds through it
        # too: only the process that made the directory removes it. A worker
        # that did took the shared directory away, the next worker failed to
        # boot, and gunicorn stopped the whole API.
        if os.getpid() == owner:
            if previous is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous
            shutil.rmtree(path, ignore_errors=True)


def _worker_gone(metrics_dir: str) -> Callable[[Any, Any], None]:
    def child_exit(_server: Any, worker: Any) -> None:
        # A dead worker's counters stay (its requests happened); its
        # "alive" gauge must go, or tpv_broker_api_workers counts it.
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(worker.pid, metrics_dir)

    return child_exit


class _MasterTokens:
    """The accepted tokens as the gunicorn master holds them: read at start
    and again on each reload (SIGHUP, ``systemctl reload``). Workers take
    what it holds when they are forked, and read no file themselves: a
    tokens file caught half-written, or with a bad line, is refused with the
    previous tokens kept, instead of failing every new worker's boot (on
    which gunicorn stops the API)."""

    def __init__(self, config: BrokerConfig) -> None:
        self.settings = config.api
        # A bad tokens file is one clear line and exit 1, before anything else.
        self.current = auth.load_tokens(self.settings)

    def get(self) -> auth.TokenSet | None:
        return self.current

    def reload(self, _server: Any) -> None:
        try:
            self.current = auth.load_tokens(self.settings)
        except BrokerError as e:
            log.error("tokens not reloaded, the previous ones are kept: %s", e)
            return
        log.info("tokens reloaded: %s", auth.describe(self.settings, self.current))


def run_gunicorn(config: BrokerConfig, bind: str, workers: int) -> None:
    tokens = _MasterTokens(config)
    with metrics_directory(config.api.metrics_dir) as metrics_dir:
        # Built once here, in the master, so that a bad protected path or
        # Redis URL is one clear line and exit 1 (BrokerError), not a
        # traceback from every worker. It opens no connection. The master is
        # no worker: its "alive" gauge files go at once.
        create_app(config, tokens=tokens.get)
        _worker_gone(metrics_dir)(None, _Pid(os.getpid()))
        log.info(auth.describe(config.api, tokens.current))
        warning = auth.file_warning(config.api)
        if warning:
            log.warning(warning)
        options = gunicorn_options(bind, workers)
        options.update(logger_class=StructuredGunicornLogger, child_exit=_worker_gone(metrics_dir),
                       on_reload=tokens.reload)
        _Gunicorn(lambda: create_app(config, tokens=tokens.get), options).run()


class _Pid:
    def __init__(self, pid: int) -> None:
        self.pid = pid
