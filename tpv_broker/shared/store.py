"""The one class that reads and writes snapshots in Redis.

A snapshot is published atomically: the collector writes it under staging
keys, then renames them onto the live keys inside one MULTI/EXEC. Readers
fetch everything a request needs inside one MULTI/EXEC too, so a reader sees
the old snapshot or the new one, never a mix, in one network round trip.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterable, Sequence

import redis

from .errors import StoreError
from .keys import SCHEMA_VERSION, STAGING_TTL_S, KeySchema
from .models import Charge, DestinationFigures, RankView, Snapshot, SnapshotMeta, ToolFigures
from .urls import redact_url

_META_FLOATS = ("created_at", "newest_point_at", "cycle_s", "stale_since", "retry_at")
_META_INTS = ("destinations", "tools", "schema_version", "failed_cycles")
# Marks the live snapshot, never creates one: a meta hash with only these
# fields would be a snapshot without figures.
_MARK_STALE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
# Bounds the size of one HSET so a huge snapshot does not block Redis for long.
_HSET_CHUNK = 1000


def connect_redis(url: str, socket_timeout_s: float) -> redis.Redis:
    """A client that fails fast: the rank path must never hang on Redis."""
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=30,
        )
    except ValueError as e:
        raise StoreError(f"invalid Redis URL {redact_url(url)}: {e}") from None


def _describe(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}"
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


# Written only when set: a healthy snapshot's hash stays as it was.
_META_OPTIONAL = ("problems", "stale_since", "failed_cycles", "stale_reason", "retry_at")


def _meta_to_hash(meta: SnapshotMeta) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in meta.model_dump().items()
            if not (k in _META_OPTIONAL and v in (None, "", 0))}


def _meta_from_hash(raw: dict[bytes, bytes]) -> SnapshotMeta | None:
    if not raw:
        return None
    fields: dict[str, Any] = {}
    for k, v in raw.items():
        key, val = k.decode(), v.decode()
        if key in _META_FLOATS:
            fields[key] = float(val) if val else None
        elif key in _META_INTS:
            fields[key] = int(val)
        else:
            fields[key] = val
    return SnapshotMeta.model_validate(fields)


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


def _parse_tool_stats(raw: bytes) -> dict[str, ToolFigures]:
    return {d: ToolFigures.model_validate(f) for d, f in json.loads(raw).items()}


def encode_tool_stats(tool_stats: dict[str, dict[str, ToolFigures]]) -> dict[str, str]:
    """The ``tool_stats`` hash's fields and values, as published."""
    return {
        field: json.dumps({dest: f.model_dump(exclude_none=True) for dest, f in per_dest.items()}, separators=(",", ":"))
        for field, per_dest in tool_stats.items()
    }


def _chunks(mapping: dict[str, str]) -> Iterable[dict[str, str]]:
    items = list(mapping.items())
    for i in range(0, len(items), _HSET_CHUNK):
        yield dict(items[i : i + _HSET_CHUNK])


class SnapshotStore:
    def __init__(self, client: redis.Redis, keys: KeySchema) -> None:
        self.client = client
        self.keys = keys
        self._parsed = _ParsedCache()

    def _fail(self, action: str, exc: redis.RedisError) -> StoreError:
        return StoreError(f"Redis at {_describe(self.client)} failed while {action}: {exc}")

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    # -- writing ---------------------------------------------------------
    def publish(self, snapshot: Snapshot, reuse_tool_stats: str | None = None,
                tool_stats_payload: dict[str, str] | None = None) -> str:
        """Publish atomically; returns this publication's id (its
        ``created_at`` as stored).

        ``reuse_tool_stats``: the id the previous publish returned, when the
        snapshot's tool statistics have not changed since. If that snapshot
        is still the live one (nobody else published, Redis was not
        flushed), the large tool statistics hash is left as it is and only
        the rest is swapped in; otherwise everything is written.
        ``tool_stats_payload``: ``encode_tool_stats(snapshot.tool_stats)``,
        if the caller has it already."""
        meta_hash = _meta_to_hash(snapshot.meta.model_copy(update={"schema_version": SCHEMA_VERSION}))
        if reuse_tool_stats:
            try:
                if self._publish_reusing_tool_stats(snapshot, meta_hash, reuse_tool_stats):
                    return meta_hash["created_at"]
            except redis.WatchError:
                pass  # another writer in between: write everything
            except redis.RedisError as e:
                raise self._fail("publishing a snapshot", e) from None
        token = uuid.uuid4().hex
        payloads = {
            self.keys.destinations: {
                dest_id: d.model_dump_json(exclude_none=True) for dest_id, d in snapshot.destinations.items()
            },
            self.keys.tool_stats: (
                tool_stats_payload if tool_stats_payload is not None else encode_tool_stats(snapshot.tool_stats)
            ),
        }
        try:
            # Staging writes may take several round trips; nobody reads them.
            stage = self.client.pipeline(transaction=False)
            for live, mapping in payloads.items():
                staging = self.keys.staging(token, live)
                for chunk in _chunks(mapping):
                    stage.hset(staging, mapping=chunk)
                if mapping:
                    stage.expire(staging, STAGING_TTL_S)
            stage.execute()
            # The swap: all live keys change together or not at all.
            swap = self.client.pipeline(transaction=True)
            for live, mapping in payloads.items():
                if mapping:
                    swap.rename(self.keys.staging(token, live), live)
                    swap.persist(live)
                else:
                    swap.delete(live)
            swap.delete(self.keys.snapshot_meta)
            swap.hset(self.keys.snapshot_meta, mapping=meta_hash)
            swap.execute()
        except redis.RedisError as e:
            raise self._fail("publishing a snapshot", e) from None
        return meta_hash["created_at"]

    def _publish_reusing_tool_stats(self, snapshot: Snapshot, meta_hash: dict[str, str], previous: str) -> bool:
        mapping = {dest_id: d.model_dump_json(exclude_none=True) for dest_id, d in snapshot.destinations.items()}
        staging = self.keys.staging(uuid.uuid4().hex, self.keys.destinations)
        stage = self.client.pipeline(transaction=False)
        for chunk in _chunks(mapping):
            stage.hset(staging, mapping=chunk)
        if mapping:
            stage.expire(staging, STAGING_TTL_S)
        stage.execute()
        with self.client.pipeline(transaction=True) as swap:
            # Still our previous snapshot, so still our tool statistics?
            # WATCH fails the swap if anyone publishes between check and EXEC.
            swap.watch(self.keys.snapshot_meta)
            live = swap.hget(self.keys.snapshot_meta, "created_at")
            if live is None or live.decode() != previous:
                swap.unwatch()
                self.client.delete(staging)
                return False
            swap.multi()
            if mapping:
                swap.rename(staging, self.keys.destinations)
                swap.persist(self.keys.destinations)
            else:
                swap.delete(self.keys.destinations)
            swap.delete(self.keys.snapshot_meta)
            swap.hset(self.keys.snapshot_meta, mapping=meta_hash)
            swap.execute()
        return True

    # -- reading ---------------------------------------------------------
    def mark_stale(self, since: float, failed_cycles: int, reason: str, retry_at: float | None) -> bool:
        """Say on the live snapshot that the collector cannot replace it.
        False if there is no snapshot to mark."""
        fields = {"stale_since": str(since), "failed_cycles": str(failed_cycles), "stale_reason": reason,
                  "retry_at": "" if retry_at is None else str(retry_at)}
        args = [v for kv in fields.items() for v in kv]
        try:
            return bool(self.client.eval(_MARK_STALE, 1, self.keys.snapshot_meta, *args))
        except redis.RedisError as e:
            raise self._fail("marking the snapshot stale", e) from None

    def read_meta(self) -> SnapshotMeta | None:
        try:
            return _meta_from_hash(self.client.hgetall(self.keys.snapshot_meta))
        except redis.RedisError as e:
            raise self._fail("reading the snapshot metadata", e) from None

    def read_for_rank(
        self, dest_ids: Sequence[str], tool_fields: Sequence[str] = (), charges_since: float | None = None
    ) -> RankView:
        """Everything one rank request needs, whatever the number of candidates,
        in one MULTI/EXEC round trip. ``tool_fields`` are ``tool_stats`` hash
        fields (``tool_ids.stats_field``); ``charges_since``: also read the
        in-flight charges made since then."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(self.keys.snapshot_meta)
            if dest_ids:
                pipe.hmget(self.keys.destinations, list(dest_ids))
            if tool_fields:
                pipe.hmget(self.keys.tool_stats, list(tool_fields))
            if charges_since is not None:
                pipe.zrangebyscore(self.keys.inflight, charges_since, "+inf")
            results = pipe.execute()
        except redis.RedisError as e:
            raise self._fail("reading the snapshot", e) from None
        meta = _meta_from_hash(results[0])
        destinations: dict[str, DestinationFigures] = {}
        tool_stats: dict[str, dict[str, ToolFigures]] = {}
        i = 1
        if dest_ids:
            for dest_id, raw in zip(dest_ids, results[i]):
                if raw is not None:
                    destinations[dest_id] = self._parsed.get(raw, DestinationFigures.model_validate_json)
            i += 1
        if tool_fields:
            for field, raw in zip(tool_fields, results[i]):
                if raw is not None:
                    tool_stats[field] = self._parsed.get(raw, _parse_tool_stats)
            i += 1
        charges: list[Charge] = []
        if charges_since is not None:
            charges = [c for c in (self._parsed.get(m, Charge.from_member) for m in results[i]) if c is not None]
        # Built from models validated above (or cached): no second validation.
        return RankView.model_construct(meta=meta, destinations=destinations, tool_stats=tool_stats, charges=charges)

    def read_all(self) -> Snapshot | None:
        """The whole snapshot (for ``inspect`` and tests), read atomically."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(self.keys.snapshot_meta)
            pipe.hgetall(self.keys.destinations)
            pipe.hgetall(self.keys.tool_stats)
            raw_meta, raw_dests, raw_tools = pipe.execute()
        except redis.RedisError as e:
            raise self._fail("reading the snapshot", e) from None
        meta = _meta_from_hash(raw_meta)
        if meta is None:
            return None
        return Snapshot(
            meta=meta,
            destinations={
                k.decode(): DestinationFigures.model_validate_json(v) for k, v in raw_dests.items()
            },
            tool_stats={
                k.decode(): {d: ToolFigures.model_validate(f) for d, f in json.loads(v).items()}
                for k, v in raw_tools.items()
            },
        )


def store_from_config(url: str, key_prefix: str, socket_timeout_s: float) -> SnapshotStore:
    return SnapshotStore(connect_redis(url, socket_timeout_s), KeySchema(key_prefix))
