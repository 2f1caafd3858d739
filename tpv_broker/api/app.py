"""The application factory: no app at module level, config passed in."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from tpv_broker.api.auth import TokenSet, load_tokens
from tpv_broker.api.auth import install as install_auth
from tpv_broker.api.rank_service import RankService
from tpv_broker.api.state import ApiState
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.logging_setup import event
from tpv_broker.store.rate_limit import Limit, RateLimiter
from tpv_broker.store.snapshots import SnapshotStore, store_from_config

log = logging.getLogger("tpv_broker.api")


def create_app(
    config: BrokerConfig | None = None,
    *,
    store: SnapshotStore | None = None,
    clock: Callable[[], float] = time.time,
    tokens: Callable[[], TokenSet | None] | None = None,
) -> Flask:
    """``config`` defaults to ``load_config()`` (file from $TPV_BROKER_CONFIG
    plus environment overrides), which is what gunicorn workers use.
    ``tokens``: the accepted tokens (``serve``: the gunicorn master's);
    without it they are read from the config's settings and files."""
    config = config or load_config()
    if store is None:
        store = store_from_config(config.redis.url, config.redis.key_prefix, config.redis.socket_timeout_s,
                                  config.redis.connect_timeout_s)
    app = Flask("tpv_broker")
    # /api//rank is a 404 like any unknown path, not an HTML redirect.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = config.api.max_request_bytes
    # Keys in the order the answers build them. app.json is typed as the
    # provider base class; the default provider Flask installs has sort_keys.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ranker = RankService(config, store, clock)
    limits = {name: Limit(t.rate_per_s, t.burst_or_default) for name, t in config.api.tenants.items()
              if t.rate_per_s is not None}
    app.extensions["tpv_broker"] = ApiState(config, store, clock, ranker, RateLimiter(store.client, store.keys, limits))

    from .metrics import init_metrics
    from .openapi import bp as docs_bp
    from .routes import bp
    from .status_page import bp as status_bp

    app.register_blueprint(bp)
    app.register_blueprint(docs_bp)
    app.register_blueprint(status_bp)
    # Imported here, not at the top: prometheus_client must not be loaded
    # before `serve` has set up its multiprocess directory.
    init_metrics(app, store, config, clock)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        # JSON for every error, naming what was wrong, never HTML.
        problem = {
            413: f"request body larger than {config.api.max_request_bytes} bytes",
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
        }.get(exc.code or 500, exc.description or exc.name)
        field = {413: "body", 429: "tenant"}.get(exc.code or 500, "url")
        body = {"error": exc.name, "message": f"{field}: {problem}", "errors": [{"field": field, "problem": problem}]}
        response = jsonify(body)
        # A 429's Retry-After: when the tenant may ask again.
        response.headers.extend((k, v) for k, v in exc.get_headers() if k == "Retry-After")
        return response, exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        # A bug, never user input: log it here, never send a traceback out.
        log.exception("unexpected error while handling a request", extra=event("unhandled_error"))
        return jsonify({"error": "internal error", "message": "internal error; see the API log"}), 500

    # Last: it checks that every path in api.auth_protected is a route.
    install_auth(app, config.api, tokens() if tokens is not None else load_tokens(config.api))
    return app
