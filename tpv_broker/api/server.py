"""Serving the app with gunicorn, configured from our config object rather
than a gunicorn.conf.py, so ``tpv-broker serve`` needs nothing else."""

from __future__ import annotations

from typing import Any, Callable

from flask import Flask
from gunicorn.app.base import BaseApplication

from ..shared.config import BrokerConfig
from .app import create_app


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
        "worker_class": "gthread",
        # Two threads per worker: a request waiting on Redis does not hold the
        # worker, and gthread keeps connections alive (sync closes after
        # every request). Measured in bench/ against sync: lower latency and
        # about 1.5x the throughput with 4 keep-alive clients.
        "threads": 2,
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
    serve_app(lambda: create_app(config), bind, workers)
