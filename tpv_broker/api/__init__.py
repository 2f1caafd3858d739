"""The rank API: a Flask app that orders TPV's candidate destinations from the
Redis snapshot alone. InfluxDB is never on the request path."""

from .app import create_app

__all__ = ["create_app"]
