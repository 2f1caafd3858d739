"""What the CLI tells an admin to do when Redis cannot be used."""

from __future__ import annotations

import redis

from tpv_broker.errors import StoreAuthError, StoreError, StorePermissionError
from tpv_broker.store.snapshots import store_error

# Most often a shell that does not point at the running system (the demo's
# Redis is on a new port each run).
REDIS_HINT = ("set TPV_BROKER_REDIS_URL (or redis.url in --config) to a running Redis; "
              "for the demo (scripts/run-local.sh, while it runs): source .local/demo/env")

# Redis answered, and refused the credentials: where they go.
REDIS_AUTH_HINT = ("put the user and password into redis.url (TPV_BROKER_REDIS_URL): "
                   "redis://USER:PASSWORD@host:6379/0")


def redis_permission_hint(key_prefix: str) -> str:
    """Redis answered, and refused a command to this user (its ACL)."""
    return (f"the Redis user needs read and write on ~{key_prefix}:* (or change redis.key_prefix); "
            "a replica is read-only")


def redis_hint(error: StoreError | redis.RedisError, key_prefix: str) -> str:
    """What to do about ``error``, a StoreError or what redis-py raised."""
    kind = store_error(error) if isinstance(error, redis.RedisError) else type(error)
    if issubclass(kind, StoreAuthError):
        return REDIS_AUTH_HINT
    if issubclass(kind, StorePermissionError):
        return redis_permission_hint(key_prefix)
    return REDIS_HINT
