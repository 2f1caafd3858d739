"""Serving the app with gunicorn, configured from our config object rather
than a gunicorn.conf.py, so ``tpv-broker serve`` needs nothing else."""

from __future__ import annotations

import logging
from typing import Any, Callable

from flask import Flask
from gunicorn.app.base import BaseApplication

from ..shared.config import BrokerConfig
from . import auth
from .app import create_app

log = logging.getLogger("tpv_broker.api")


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
        # Options newer gunicorns added are skipped on older ones.
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Flask:
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


def run_gunicorn(config: BrokerConfig, bind: str, workers: int) -> None:
    # Built once here, in the master, so that a bad tokens file, protected
    # path or Redis URL is one clear line and exit 1 (BrokerError), not a
    # traceback from every worker. It opens no connection.
    create_app(config)
    log.info(auth.describe(config.api, auth.load_tokens(config.api)))
    warning = auth.file_warning(config.api)
    if warning:
        log.warning(warning)
    serve_app(lambda: create_app(config), bind, workers)
