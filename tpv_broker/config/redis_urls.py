"""Redis URLs naming a Sentinel-managed master:

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/master_name[/db]

The sentinels are asked where ``master_name`` is (port 26379 unless given);
the credentials are the master's (and its replicas'), never sent to the
sentinels. Anything shown to people goes through ``redact_url``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

import redis

from tpv_broker.config.urls import redact_url, url_secrets

SENTINEL_SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Raises ValueError naming the problem (with the password redacted)."""
    shown = redact_url(url)
    rest = url[len(SENTINEL_SCHEME):]
    netloc, _, path = rest.partition("/")
    netloc = netloc.split("?", 1)[0]
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    sentinels = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "")
        if not host:
            raise ValueError(f"{shown!r}: a sentinel address is empty (expected host[:port],...)")
        try:
            port_no = int(port) if sep else DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError(f"{shown!r}: sentinel port {port!r} is not a number") from None
        if not 0 < port_no < 65536:
            raise ValueError(f"{shown!r}: sentinel port {port_no} is out of range")
        sentinels.append((host.strip("[]"), port_no))
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if not segments:
        raise ValueError(f"{shown!r}: no master name (expected {SENTINEL_SCHEME}host:26379/master_name[/db])")
    if len(segments) > 2:
        raise ValueError(f"{shown!r}: expected /master_name[/db] after the sentinels")
    db = 0
    if len(segments) == 2:
        try:
            db = int(segments[1])
        except ValueError:
            raise ValueError(f"{shown!r}: database {segments[1]!r} is not a number") from None
    return SentinelTarget(tuple(sentinels), unquote(segments[0]), db, username, password)


_BAD_HOST = "the host name is not a valid one (an empty or over-long label)"


def sentinel_hosts_problem(target: SentinelTarget) -> str | None:
    """What no resolver takes among the sentinels' host names, or None."""
    for host, _port in target.sentinels:
        try:
            host.encode("idna")
        except UnicodeError:
            return f"sentinel {host!r}: {_BAD_HOST}"
    return None


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a redis://, rediss:// or unix:// URL that redis-py
    would only trip on when connecting (an option it does not know, a host
    name no resolver takes), as a TypeError or UnicodeError outside its own
    errors: every command a traceback, every API request a 500. None if
    nothing is."""
    try:
        pool = redis.ConnectionPool.from_url(url)
        pool.make_connection()  # builds the connection object; connects nothing
        host = pool.connection_kwargs.get("host")
        if isinstance(host, str):
            host.encode("idna")
    except TypeError as e:
        unknown = re.search(r"keyword argument '([^']+)'", str(e))
        return f"unknown option {unknown.group(1)!r} in the query" if unknown else f"cannot be used: {e}"
    except UnicodeError:
        return _BAD_HOST
    except redis.RedisError as e:  # e.g. ?protocol=4
        return str(e)
    except ValueError as e:
        return unparsed(url, e)
    return None


def unparsed(url: str, e: ValueError) -> str:
    """redis-py's ValueError about ``url``, fit to show: its message can
    quote a piece of a password that holds an unescaped / # ? or @ (it took
    the piece for a port or a db)."""
    return "cannot be parsed (%-encode / # ? @ and % in a password)" if url_secrets(url) else str(e)
