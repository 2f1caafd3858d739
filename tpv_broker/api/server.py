"""Serving the app with gunicorn, configured from our config object rather
than a gunicorn.conf.py, so ``tpv-broker serve`` needs nothing else."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from ..shared.config import BrokerConfig
from .app import create_app


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, config: BrokerConfig, options: dict[str, Any]) -> None:
        self.broker_config = config
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
        return create_app(self.broker_config)


def run_gunicorn(config: BrokerConfig, bind: str, workers: int) -> None:
    _Gunicorn(
        config,
        {
            "bind": bind,
            "workers": workers,
            "worker_class": "sync",
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
        },
    ).run()
