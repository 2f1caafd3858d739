"""The one class that reads and writes snapshots in Redis.

A snapshot is published atomically: the collector writes it under staging
keys, then renames them onto the live keys inside one MULTI/EXEC. Readers
fetch everything a request needs inside one MULTI/EXEC too, so a reader sees
the old snapshot or the new one, never a mix, in one network round trip.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel
from redis.typing import EncodableT, FieldT

from tpv_broker.config.ranking_settings import InflightSettings
from tpv_broker.config.redis_urls import SENTINEL_SCHEME, parse_sentinel_url, unparsed
from tpv_broker.config.urls import redact_url, scrub
from tpv_broker.core.charges import ChargeState
from tpv_broker.core.models import DestinationFigures, RankView, Snapshot, SnapshotMeta, SourceStatus, ToolFigures
from tpv_broker.errors import StoreAuthError, StoreError, StorePermissionError
from tpv_broker.store.health import HealthStore
from tpv_broker.store.inflight import ChargeRead, InflightStore
from tpv_broker.store.keys import SCHEMA_VERSION, STAGING_TTL_S, KeySchema
from tpv_broker.store.leader_lock import Fence, LeaseLost

log = logging.getLogger("tpv_broker.store")

_META_FLOATS = ("created_at", "newest_point_at", "cycle_s", "stale_since", "retry_at")
_META_INTS = ("destinations", "tools", "schema_version", "failed_cycles")
# Marks the live snapshot, never creates one: a meta hash with only these
# fields would be a snapshot without figures.
# KEYS[2] (optional): the collector lease, which must hold ARGV[1] (a
# collector that lost it says nothing about the new holder's snapshot).
_MARK_STALE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fields = 1
if #KEYS == 2 then
  if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
  fields = 2
end
redis.call('HSET', KEYS[1], unpack(ARGV, fields))
return 1
"""
# Bounds the size of one HSET so a huge snapshot does not block Redis for long.
_HSET_CHUNK = 1000
# A fenced swap is retried when the lease key changed under its WATCH (the
# holder's own renewal does that); a lost lease stops it at once.
_FENCE_ATTEMPTS = 5


def _retry_policy() -> Retry:
    """Pinned rather than left to redis-py, whose defaults differ between
    versions (5.x: none; 6 and later: ``Redis(...)`` retries with backoff,
    timeouts included, which costs seconds per command against a dead or
    hung server) and between ``Redis(...)`` and ``Redis.from_url`` (none).
    One immediate retry after a dropped connection, so the first command on
    a pooled connection that a restarted Redis or a Sentinel failover cut
    reconnects instead of failing; never after a timeout, so a hung Redis
    costs a request at most one socket timeout per attempt."""
    return Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def connect_redis(url: str, socket_timeout_s: float, connect_timeout_s: float | None = None) -> redis.Redis:
    """The one place a Redis client is built (API, collector, CLI): a
    client that fails fast, since the rank path must never hang on Redis,
    and reconnects by itself (connections are opened lazily, per command).
    ``redis+sentinel://`` URLs name a Sentinel-managed master
    (``redis_urls``)."""
    options: dict[str, Any] = dict(
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s if connect_timeout_s is not None else socket_timeout_s,
        retry=_retry_policy(),
        # A connection idle this long is PINGed before use (a half-open one
        # fails there, within the timeouts, and is replaced).
        health_check_interval=30,
    )
    try:
        if url.startswith(SENTINEL_SCHEME):
            target = parse_sentinel_url(url)
            sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=dict(options), **options)
            master: redis.Redis = sentinel.master_for(target.master, db=target.db, username=target.username,
                                                      password=target.password, **options)
            return master
        return redis.Redis.from_url(url, **options)
    except ValueError as e:
        raise StoreError(f"invalid Redis URL {redact_url(url)}: {unparsed(url, e)}") from None


def _describe(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}"
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


def store_error(exc: redis.RedisError) -> type[StoreError]:
    """The kind of StoreError a Redis error is: a refusal of the credentials
    or of a command to this user is the admin's to fix in the config."""
    if isinstance(exc, redis.AuthenticationError):
        return StoreAuthError
    if isinstance(exc, NoPermissionError):
        return StorePermissionError
    return StoreError


def _reason(exc: redis.RedisError) -> str:
    if isinstance(exc, MasterNotFoundError):
        # redis-py appends the whole client's repr; the first part says it.
        return str(exc).split(" : ", 1)[0] + " (no sentinel reachable, or none knows it)"
    return str(exc)
# Written only when set: a healthy snapshot's hash stays as it was.
_META_OPTIONAL = ("problems", "stale_since", "failed_cycles", "stale_reason", "retry_at", "sources")
# Fields held as JSON: name -> object.
_META_JSON = ("sources",)


def _meta_to_hash(meta: SnapshotMeta) -> dict[str, str]:
    fields = meta.model_dump(exclude_none=False)
    return {k: json.dumps(v, separators=(",", ":"), sort_keys=True) if k in _META_JSON
            else "" if v is None else str(v)
            for k, v in fields.items() if not (k in _META_OPTIONAL and v in (None, "", 0, {}))}


def _meta_from_hash(raw: dict[bytes, bytes]) -> SnapshotMeta | None:
    """The snapshot's metadata; None if there is none, or none readable
    (garbage written by hand reads as no snapshot, never as an error 500)."""
    if not raw:
        return None
    fields: dict[str, Any] = {}
    try:
        for k, v in raw.items():
            key, val = k.decode(), v.decode()
            if key in _META_FLOATS:
                number = float(val) if val else None
                if number is not None and not math.isfinite(number):
                    raise ValueError(f"{key} is {val}")
                fields[key] = number
            elif key in _META_INTS:
                fields[key] = int(val)
            elif key in _META_JSON:
                fields[key] = json.loads(val) if val else {}
            else:
                fields[key] = val
        return SnapshotMeta.model_validate(fields)
    except ValueError as e:  # UnicodeDecodeError and pydantic's ValidationError are ones
        log.warning("the snapshot's metadata in Redis cannot be read; taken as no snapshot: %s", str(e)[:200])
        return None


# What _figures_or_unreadable gives for a value it cannot read (cached like any).
_UNREADABLE: Any = False


def _figures_or_unreadable(raw: bytes) -> Any:
    try:
        return DestinationFigures.model_validate_json(raw)
    except ValueError:  # pydantic's ValidationError is one
        log.warning("a destination's figures in Redis cannot be read; left out: %r", raw[:120])
        return _UNREADABLE


class _ParsedCache:
    """Raw snapshot values (bytes from Redis) -> their parsed models, so a
    worker parses each destination's and each tool's JSON once per snapshot,
    not once per request. Keyed by the bytes themselves: a new snapshot
    brings new bytes, so nothing stale can be served. The models are never
    mutated by readers (whoever adjusts figures copies them). Bounded: cleared when
    full, which a new snapshot every few seconds does anyway."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[bytes, Any] = {}

    def get(self, raw: bytes, parse: Callable[[bytes], Any]) -> Any:
        value = self.entries.get(raw)
        if value is None:
            value = parse(raw)
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            self.entries[raw] = value
        return value


class _LiveSnapshot:
    """What a worker keeps of the live snapshot between requests: every
    destination's figures, parsed once. A request reads only the metadata,
    the tool's fields and the charges while ``created_at`` (a snapshot's
    id: every publish sets a new one) stays the same."""

    def __init__(self, created_at: bytes, destinations: dict[str, DestinationFigures]) -> None:
        self.created_at = created_at
        self.destinations = destinations


class _RawRankView(NamedTuple):
    """One rank read's replies, as Redis gave them (None: not asked)."""

    meta: dict[bytes, bytes]
    destinations: dict[bytes, bytes] | None
    tools: list[bytes | None] | None
    charges: list[Any] | None


def _parse_tool_stats(raw: bytes) -> dict[str, ToolFigures]:
    try:
        per_destination = json.loads(raw)
        return {d: ToolFigures.model_validate(f) for d, f in per_destination.items()}
    except (ValueError, AttributeError):
        log.warning("a tool's run-time statistics in Redis cannot be read; left out: %r", raw[:120])
        return {}


def encode_tool_stats(tool_stats: dict[str, dict[str, ToolFigures]]) -> dict[str, str]:
    """The ``tool_stats`` hash's fields and values, as published."""
    return {
        field: json.dumps({dest: f.model_dump(exclude_none=True) for dest, f in per_dest.items()},
                          separators=(",", ":"))
        for field, per_dest in tool_stats.items()
    }


def _charge_trim(charges: InflightStore | None, snapshot: Snapshot) -> Callable[[Any], None] | None:
    """What the publish's transaction runs to end the charges this
    snapshot's figures show (``InflightStore.queue_trim``)."""
    if charges is None:
        return None
    live_at = {d: f.live_at for d, f in snapshot.destinations.items() if f.live_at is not None}
    return lambda pipe: charges.queue_trim(pipe, live_at, snapshot.meta.created_at)


def _redis_hash(mapping: dict[str, str]) -> dict[FieldT, EncodableT]:
    """The same hash, typed as redis-py's ``hset`` takes it (its mapping's
    keys are invariant, so a ``dict[str, str]`` does not type-check)."""
    return dict(mapping.items())


def _chunks(mapping: dict[str, str]) -> Iterable[dict[FieldT, EncodableT]]:
    items = list(mapping.items())
    for i in range(0, len(items), _HSET_CHUNK):
        yield dict(items[i : i + _HSET_CHUNK])


class SnapshotStore:
    def __init__(self, client: redis.Redis, keys: KeySchema, where: str | None = None) -> None:
        self.client = client
        self.keys = keys
        # How messages name this Redis (never with credentials).
        self.where = where or _describe(client)
        self._parsed = _ParsedCache()
        self._live: _LiveSnapshot | None = None
        self._last_meta: tuple[dict[bytes, bytes], SnapshotMeta | None] | None = None

    def failure(self, action: str, exc: redis.RedisError) -> StoreError:
        secret = self.client.connection_pool.connection_kwargs.get("password")
        return store_error(exc)(f"Redis at {self.where} failed while {action}: {scrub(_reason(exc), [secret])}")

    def inflight(self, settings: InflightSettings) -> InflightStore | None:
        """The in-flight charges beside this snapshot, None if accounting is off."""
        if not settings.enabled:
            return None
        return InflightStore(self.client, self.keys, settings.max_age_s, settings.reflect_lag_s, self.failure)

    def health(self) -> HealthStore:
        """Destination health's placements and pins, on this store's Redis."""
        return HealthStore(self.client, self.keys, self.failure)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    # -- writing ---------------------------------------------------------
    def publish(self, snapshot: Snapshot, reuse_tool_stats: str | None = None,
                tool_stats_payload: dict[str, str] | None = None, fence: Fence | None = None,
                charges: InflightStore | None = None) -> str:
        """Publish atomically; returns this publication's id (its
        ``created_at`` as stored).

        ``reuse_tool_stats``: the id the previous publish returned, when the
        snapshot's tool statistics have not changed since. If that snapshot
        is still the live one (nobody else published, Redis was not
        flushed or restarted empty), the large tool statistics hash is left
        as it is and only the rest is swapped in; otherwise everything is
        written.
        ``tool_stats_payload``: ``encode_tool_stats(snapshot.tool_stats)``,
        if the caller has it already.
        ``fence``: publish only while the collector lease holds this token,
        checked inside the swap's transaction; raises ``LeaseLost`` if not.
        ``charges``: end, in the same transaction, the in-flight charges
        the new figures show (so no reader sees the figures without the
        charges ended, or the other way round)."""
        meta_hash = _meta_to_hash(snapshot.meta.model_copy(update={"schema_version": SCHEMA_VERSION}))
        destinations = {dest_id: d.model_dump_json(exclude_none=True) for dest_id, d in snapshot.destinations.items()}
        try:
            trim = _charge_trim(charges, snapshot)
            if reuse_tool_stats and self._write({self.keys.destinations: destinations}, meta_hash, fence, trim,
                                                over=reuse_tool_stats):
                return meta_hash["created_at"]
            tool_stats = (tool_stats_payload if tool_stats_payload is not None
                          else encode_tool_stats(snapshot.tool_stats))
            if not self._write({self.keys.destinations: destinations, self.keys.tool_stats: tool_stats}, meta_hash,
                               fence, trim):
                raise redis.WatchError("the collector lease kept changing")
        except redis.RedisError as e:
            raise self.failure("publishing a snapshot", e) from None
        return meta_hash["created_at"]

    def _write(self, payloads: dict[str, dict[str, str]], meta_hash: dict[str, str], fence: Fence | None,
               trim: Callable[[Any], None] | None = None, over: str | None = None) -> bool:
        """The one way a snapshot goes live: ``payloads`` (live key -> hash)
        written under staging keys, then renamed onto the live keys with the
        new metadata in one MULTI/EXEC. Live keys not in ``payloads`` stay
        as they are, which is right only ``over`` the publication whose
        ``created_at`` that is: if another snapshot is live, or anyone
        publishes before the EXEC, nothing changes and this is False. Also
        False if the lease key kept changing under the swap's WATCH."""
        staged = self._stage(payloads)
        empty = [live for live, mapping in payloads.items() if not mapping]
        for _ in range(_FENCE_ATTEMPTS):
            with self.client.pipeline(transaction=True) as swap:
                if over is not None and not self._still_live(swap, over):
                    break
                if fence is not None:
                    self._check_fence(swap, fence, list(staged.values()))
                else:
                    swap.multi()
                for live, staging in staged.items():
                    if live in empty:
                        swap.delete(live)
                    else:
                        swap.rename(staging, live)
                        swap.persist(live)
                swap.delete(self.keys.snapshot_meta)
                swap.hset(self.keys.snapshot_meta, mapping=_redis_hash(meta_hash))
                if trim is not None:
                    trim(swap)
                try:
                    swap.execute()
                    return True
                except redis.WatchError:
                    if over is not None:
                        break  # someone may have published over it: write everything
                    # Otherwise only the lease key was touched (our own renewal?): check again.
        self.client.delete(*staged.values())
        return False

    def _stage(self, payloads: dict[str, dict[str, str]]) -> dict[str, str]:
        """Write each hash under a staging key of its own (live key ->
        staging key); nobody reads them, so this may take several round trips."""
        token = uuid.uuid4().hex
        staged = {live: self.keys.staging(token, live) for live in payloads}
        stage = self.client.pipeline(transaction=False)
        for live, mapping in payloads.items():
            for i, chunk in enumerate(_chunks(mapping)):
                stage.hset(staged[live], mapping=chunk)
                if i == 0:
                    # At once: a collector killed while sending the other
                    # chunks must not leave a hash that never expires.
                    stage.expire(staged[live], STAGING_TTL_S)
        stage.execute()
        return staged

    def _still_live(self, pipe: Any, created_at: str) -> bool:
        """WATCH the metadata and check the live snapshot is the one
        published as ``created_at``; the EXEC that follows fails if anyone
        publishes in between."""
        pipe.watch(self.keys.snapshot_meta)
        live = pipe.hget(self.keys.snapshot_meta, "created_at")
        if live is None or live.decode() != created_at:
            pipe.unwatch()
            return False
        return True

    def _check_fence(self, pipe: Any, fence: Fence, staging: list[str]) -> None:
        """WATCH the lease key and check it holds our token; the EXEC that
        follows fails if anyone changes it in between. Leaves ``pipe`` in
        MULTI mode."""
        pipe.watch(fence.key)
        holder = pipe.get(fence.key)
        if holder is None or holder.decode(errors="replace") != fence.token:
            pipe.unwatch()
            self.client.delete(*staging)
            raise LeaseLost(None if holder is None else holder.decode(errors="replace"))
        pipe.multi()

    def mark_stale(self, since: float, failed_cycles: int, reason: str, retry_at: float | None,
                   fence: Fence | None = None, sources: Mapping[str, SourceStatus] | None = None) -> bool:
        """Say on the live snapshot that the collector cannot replace it
        (and, with several sources, each one's state now). False if there
        is no snapshot to mark, or ``fence`` says this collector no longer
        holds the lease."""
        fields = {"stale_since": str(since), "failed_cycles": str(failed_cycles), "stale_reason": reason,
                  "retry_at": "" if retry_at is None else str(retry_at)}
        if sources:
            fields["sources"] = _meta_to_hash(SnapshotMeta(created_at=0.0, sources=dict(sources)))["sources"]
        args = [v for kv in fields.items() for v in kv]
        keys = [self.keys.snapshot_meta]
        if fence is not None:
            keys.append(fence.key)
            args.insert(0, fence.token)
        try:
            return bool(self.client.eval(_MARK_STALE, len(keys), *keys, *args))
        except redis.RedisError as e:
            raise self.failure("marking the snapshot stale", e) from None

    # -- reading ---------------------------------------------------------
    def read_meta(self) -> SnapshotMeta | None:
        try:
            # connect() never asks redis-py to decode: fields and values are bytes.
            return _meta_from_hash(cast("dict[bytes, bytes]", self.client.hgetall(self.keys.snapshot_meta)))
        except redis.RedisError as e:
            raise self.failure("reading the snapshot metadata", e) from None

    def read_for_rank(self, tool_fields: Sequence[str] = (), charges: ChargeRead | None = None) -> RankView:
        """Everything one rank request needs, whatever the number of
        candidates, read in one MULTI/EXEC: the metadata, the tool's
        ``tool_stats`` fields (``tool_ids.stats_field``) and, if asked, the
        in-flight charges on the candidates (``charges``). The
        destinations' figures come from what this reader kept of the live
        snapshot; once per new snapshot they are read again, with the rest,
        in a second MULTI/EXEC (so all of it still comes from one
        snapshot). The view holds every destination's figures (the rank
        core looks up its candidates); never modify them."""
        live = self._live
        try:
            raw = self._read_rank_view(tool_fields, charges, with_destinations=live is None)
            if live is not None and raw.meta.get(b"created_at") not in (None, live.created_at):
                raw = self._read_rank_view(tool_fields, charges, with_destinations=True)
        except redis.RedisError as e:
            raise self.failure("reading the snapshot", e) from None
        meta = self._rank_meta(raw.meta)
        if meta is None:
            live = None
        elif raw.destinations is not None:
            live = self._keep_live(raw.meta[b"created_at"], raw.destinations)
        tool_stats: dict[str, dict[str, ToolFigures]] = {}
        if raw.tools is not None:
            for field, value in zip(tool_fields, raw.tools, strict=True):
                if value is not None:
                    tool_stats[field] = self._parsed.get(value, _parse_tool_stats)
        state = charges.parse(raw.charges) if charges is not None and raw.charges is not None else ChargeState()
        # Every destination of the snapshot (the rank core looks up its
        # candidates), shared by this reader's requests: no copy per request.
        destinations = live.destinations if live is not None else {}
        # Built from models validated above (or kept): no second validation.
        return RankView.model_construct(meta=meta, destinations=destinations, tool_stats=tool_stats, charges=state,
                                        columns=None)

    def _rank_meta(self, raw: dict[bytes, bytes]) -> SnapshotMeta | None:
        """The metadata, parsed again only when it changed (a publish, a
        stale mark): readers never modify it."""
        last = self._last_meta
        if last is not None and last[0] == raw:
            return last[1]
        meta = _meta_from_hash(raw)
        self._last_meta = (raw, meta)
        return meta

    def _read_rank_view(self, tool_fields: Sequence[str], charges: ChargeRead | None,
                        with_destinations: bool) -> _RawRankView:
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys.snapshot_meta)
        if with_destinations:
            pipe.hgetall(self.keys.destinations)
        if tool_fields:
            pipe.hmget(self.keys.tool_stats, list(tool_fields))
        replies = charges.queue(pipe) if charges is not None else 0
        results = pipe.execute()
        at = 1 + with_destinations
        return _RawRankView(results[0], results[1] if with_destinations else None,
                            results[at] if tool_fields else None,
                            results[len(results) - replies:] if replies else None)

    def _keep_live(self, created_at: bytes, raw: dict[bytes, bytes]) -> _LiveSnapshot:
        live = _LiveSnapshot(created_at, self._destinations(raw))
        self._live = live
        return live

    def _destinations(self, raw: dict[bytes, bytes]) -> dict[str, DestinationFigures]:
        """Each destination's figures, parsed once per value; one that cannot
        be read (written by hand, or by a collector with a bug) is left out,
        as if the snapshot did not hold it, rather than failing every read."""
        out = {}
        for k, v in raw.items():
            figures = self._parsed.get(v, _figures_or_unreadable)
            if figures is not _UNREADABLE:
                out[k.decode(errors="replace")] = figures
        return out

    def read_overview(self, charges: ChargeRead | None = None) -> RankView:
        """Every destination's figures (no tool statistics, which can be
        megabytes) and, if asked, the in-flight charges: what the status
        page shows, in one MULTI/EXEC."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(self.keys.snapshot_meta)
            pipe.hgetall(self.keys.destinations)
            replies = charges.queue(pipe) if charges is not None else 0
            results = pipe.execute()
        except redis.RedisError as e:
            raise self.failure("reading the snapshot", e) from None
        destinations = self._destinations(results[1])
        state = charges.parse(results[2:2 + replies]) if charges is not None else ChargeState()
        return RankView.model_construct(meta=_meta_from_hash(results[0]), destinations=destinations, tool_stats={},
                                        charges=state)

    def read_all(self) -> Snapshot | None:
        """The whole snapshot (for ``inspect`` and tests), read atomically."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(self.keys.snapshot_meta)
            pipe.hgetall(self.keys.destinations)
            pipe.hgetall(self.keys.tool_stats)
            raw_meta, raw_dests, raw_tools = pipe.execute()
        except redis.RedisError as e:
            raise self.failure("reading the snapshot", e) from None
        meta = _meta_from_hash(raw_meta)
        if meta is None:
            return None
        return Snapshot(
            meta=meta,
            destinations=self._destinations(raw_dests),
            tool_stats={
                k.decode(): _parse_tool_stats(v) for k, v in raw_tools.items()
            },
        )


def store_from_config(url: str, key_prefix: str, socket_timeout_s: float,
                      connect_timeout_s: float | None = None) -> SnapshotStore:
    client = connect_redis(url, socket_timeout_s, connect_timeout_s)
    where = redact_url(url) if url.startswith(SENTINEL_SCHEME) else None
    return SnapshotStore(client, KeySchema(key_prefix), where)
