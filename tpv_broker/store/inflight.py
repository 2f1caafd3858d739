"""In-flight charges in Redis (keys: ``keys.py``).

Each live charge is a member of one sorted set (score: when it was made), and
the charge script keeps, beside it, the sums of each destination's members
(``<p>:inflight:load``). A rank request reads the sums of its candidates
only, so its cost does not grow with the number of jobs in flight. Charges
leave the sums in a script too, never on the request path:

* the collector's publish removes, in the transaction that swaps the new
  snapshot in, the charges its figures now show (made more than
  ``reflect_lag_s`` before the destination's newest live point) and records
  that time per destination (``<p>:inflight:reflected``);
* every charge, and every publish, first removes the charges older than
  ``max_age_s``. Until one runs, a reader takes those out itself
  (``ChargeRead`` asks for them; there are few).

A job charged again (Galaxy resubmits, a handler restarts) moves its charge:
``<p>:inflight:job:<tenant>:<job id>`` holds its member. One that comes
back ``RETURN_AFTER_S`` or more after its charge, asking for no more cores
or memory, is counted as returned by the destination it had gone to
(``<p>:health:returns``; ``<p>:health:back:<tenant>:<job id>`` remembers
where from while the job is placed there again, so a job coming back from
one place again and again counts once there): Galaxy resubmits a job that
failed there, and the broker learns of it within seconds instead of at
the next error report.

Scripts, so several API workers charging at once, a job ranked twice and a
publish in between all stay exact."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from tpv_broker.core.charges import Charge, ChargeLoad, ChargeState
from tpv_broker.errors import StoreError
from tpv_broker.ids import DEFAULT_TENANT
from tpv_broker.store.keys import KeySchema

# KEYS[1]: the charges zset; KEYS[2]: the load hash; KEYS[3]: the reflected
# hash. Charges leave only through drop(), so the load stays the sum of
# the members.
_LIB = """
-- A value someone else wrote under our keys must not stop a charge, nor
-- (run inside the publish's MULTI/EXEC) a publish: garbage decodes to nil.
local function decode(raw)
  local ok, v = pcall(cjson.decode, raw)
  if ok and type(v) == 'table' then return v end
  return nil
end
local function numbers(t, ...)
  for _, k in ipairs({...}) do
    if type(t[k]) ~= 'number' then return false end
  end
  return true
end
local function load_of(d)
  local l = decode(redis.call('HGET', KEYS[2], d) or '')
  if l and numbers(l, 'n', 'cores', 'mem', 'core_s', 'timed') then return l end
  return {n = 0, cores = 0, mem = 0, core_s = 0, timed = 0}
end
local function reflected(d)
  return tonumber(redis.call('HGET', KEYS[3], d))
end
local function save(d, l)
  -- A reader's own charge: still in these sums only if made since then.
  l.reflected = reflected(d)
  redis.call('HSET', KEYS[2], d, cjson.encode(l))
end
local function change(c, sign)
  local l = load_of(c.d)
  l.n = l.n + sign
  if l.n <= 0 then
    redis.call('HDEL', KEYS[2], c.d)
    return
  end
  l.cores = l.cores + sign * c.c
  l.mem = l.mem + sign * c.m
  if c.r then
    l.core_s = l.core_s + sign * c.c * c.r
    l.timed = l.timed + sign
  end
  save(c.d, l)
end
-- A member in the sums: written by this script (it names its tenant;
-- members an API before the sums wrote do not, and never were in them).
local function valid(c)
  return c and type(c.d) == 'string' and type(c.g) == 'string' and numbers(c, 'c', 'm', 't')
    and (c.r == nil or type(c.r) == 'number')
end
local function drop(member)
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local c = decode(member)
    if valid(c) then change(c, -1) end
  end
end
local function drop_older_than(t)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. t)) do drop(m) end
end
"""

# KEYS[4]: the placement counts, KEYS[5]: the return counts (destination
# health); KEYS[6] and KEYS[7] (optional, together): the job's key and the
# destination it came back from and was placed on again. ARGV: member,
# charged at, drop charges older than this, TTL (s), the placement
# count's field, the counts' TTL (s), the return count's field less its
# destination, the least age (s) of a charge whose job comes back for it
# to count as returned ("": it does not count, the charge is an admin's).
# Returns 1 if charged, 0 if the destination's figures already show a job
# charged that early (the clocks disagree). Either way the job went
# there: it is counted, once per job and destination in a row (a job
# ranked again to the same place is not), and so is a job coming back
# (one resubmitted three times from the same place is one of one there,
# as the error reports count jobs).
_CHARGE = _LIB + """
-- A key someone else gave another type must not stop a charge.
local function count(key, field)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'hash' and kind ~= 'none' then return end
  redis.call('HINCRBY', key, field, 1)
  redis.call('EXPIRE', key, ARGV[6])
end
local function get(key)
  if redis.call('TYPE', key).ok ~= 'string' then return false end
  return redis.call('GET', key)
end
-- The same charge again (its member is unique): redis-py sent it twice,
-- retrying after the connection dropped before the reply came. Made once.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
drop_older_than(ARGV[3])
local c = cjson.decode(ARGV[1])
local placed = true
if KEYS[6] then
  local old = get(KEYS[6])
  if old then
    local was = decode(old)
    -- More cores or memory: TPV resized it after it ran out, no fault of
    -- the destination's.
    local after = tonumber(ARGV[8])
    if after and valid(was) and c.t - was.t >= after and c.c <= was.c and c.m <= was.m then
      if get(KEYS[7]) ~= was.d then count(KEYS[5], ARGV[7] .. was.d) end
      redis.call('SET', KEYS[7], was.d, 'EX', ARGV[4])
    end
    if was and was.d == c.d then placed = false end
    drop(old)
  end
end
if placed then
  count(KEYS[4], ARGV[5])
  -- Placed anew: coming back from here (or anywhere) counts again.
  if KEYS[7] then redis.call('DEL', KEYS[7]) end
end
local shown = reflected(c.d)
if shown and c.t < shown then
  -- Not charged, but the job went there: the job's key remembers it,
  -- marked refused (in no sums: a reader never takes it out of them), so
  -- that the charge sent again, or the job ranked again, is the same
  -- placement, and the job coming back is a return. Spliced, not
  -- encoded again: cjson writes 14 digits, and a job's memory read back
  -- rounded down would be "more memory" when it comes back.
  if KEYS[6] then
    redis.call('SET', KEYS[6], string.sub(ARGV[1], 1, -2) .. ',"refused":true}', 'EX', ARGV[4])
  end
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
change(c, 1)
if KEYS[6] then redis.call('SET', KEYS[6], ARGV[1], 'EX', ARGV[4]) end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

# ARGV: drop charges older than this, TTL (s), then pairs of destination
# and the time before which its new figures show every charge.
_TRIM = _LIB + """
drop_older_than(ARGV[1])
local cut, latest = {}, nil
for i = 3, #ARGV, 2 do
  local d, t = ARGV[i], tonumber(ARGV[i + 1])
  local before = tonumber(redis.call('HGET', KEYS[3], d))
  -- Never back: a charge removed stays removed.
  if before and before > t then t = before end
  if t ~= before then redis.call('HSET', KEYS[3], d, string.format('%.17g', t)) end
  cut[d] = t
  if not latest or t > latest then latest = t end
end
if latest then
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.17g', latest))) do
    local c = decode(m)
    if not valid(c) or (cut[c.d] and c.t < cut[c.d]) then drop(m) end
  end
end
-- A time before the oldest live charge shows nothing any more: dropped,
-- or the ids of destinations gone from the snapshot piled up for ever.
local oldest = tonumber(ARGV[1])
local times = redis.call('HGETALL', KEYS[3])
for i = 1, #times, 2 do
  local t = tonumber(times[i + 1])
  if not t or t < oldest then redis.call('HDEL', KEYS[3], times[i]) end
end
for d in pairs(cut) do
  if redis.call('HEXISTS', KEYS[2], d) == 1 then save(d, load_of(d)) end
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
"""


# Placements are counted per destination in buckets of this many seconds
# and tenant (``<p>:health:placements``, field
# "<bucket start>:<tenant>:<destination>": a tenant id holds no colon); the
# collector drops the buckets its health window has passed, and the hash
# expires if nothing is placed for a day.
PLACEMENT_BUCKET_S = 300
PLACEMENTS_TTL_S = 86400


# A job charged again this soon after its charge did not fail where it
# went: a job through a runner, failed and resubmitted by Galaxy takes
# longer (the handler alone waits a second between its passes); a client
# that retries a request, or a double rank, does not. A job charged again
# later through the API for another reason (a handler mapping it again, a
# request made by hand with its id) is counted as returned: docs/health.md.
# Returns are counted in the same buckets as placements, and only while
# the job's key lives (inflight.max_age_s): a job failing later is left to
# the error reports.
RETURN_AFTER_S = 5.0


def placement_field(at: float, tenant: str, destination: str) -> str:
    """The field of a placement (or return) count: its bucket, tenant and destination."""
    return f"{int(at // PLACEMENT_BUCKET_S) * PLACEMENT_BUCKET_S}:{tenant}:{destination}"


# Parsed loads a worker keeps (a few hundred bytes each): a few per
# destination between two publishes.
_LOADS_KEPT = 10_000
_UNPARSED = ChargeLoad(count=-1)


def _plain_failure(action: str, exc: redis.RedisError) -> StoreError:
    return StoreError(f"Redis failed while {action}: {exc}")


@dataclass(frozen=True)
class ChargeRead:
    """What one rank request reads of the charges, inside its own
    MULTI/EXEC (``SnapshotStore.read_for_rank``): the charges past their
    age that Redis still holds (few: every charge and every publish removes
    them), the candidates' loads only, and the ranked job's own charge."""

    keys: KeySchema
    # None: every destination (the status page).
    destinations: list[str] | None
    own_key: str | None
    expired_before: float
    parse_load: Callable[[bytes], ChargeLoad | None]

    def queue(self, pipe: Any) -> int:
        """Queue the reads on ``pipe``; the number of replies they add."""
        pipe.zrangebyscore(self.keys.inflight, "-inf", f"({self.expired_before!r}")
        if self.destinations is None:
            pipe.hgetall(self.keys.inflight_load)
        elif self.destinations:
            pipe.hmget(self.keys.inflight_load, self.destinations)
        else:
            return 1
        if self.own_key is not None:
            pipe.get(self.own_key)
        return 2 + (self.own_key is not None)

    def parse(self, replies: Sequence[Any]) -> ChargeState:
        expired = _charges(replies[0])
        if self.destinations is None:
            raw = {k.decode(): v for k, v in replies[1].items()}
        elif self.destinations:
            raw = dict(zip(self.destinations, replies[1], strict=True))
        else:
            return ChargeState(expired=expired)
        loads = {d: load for d, v in raw.items() if v is not None and (load := self.parse_load(v)) is not None}
        own = Charge.from_member(replies[2]) if self.own_key is not None and replies[2] is not None else None
        return ChargeState(loads, expired, own)


class InflightStore:
    def __init__(self, client: redis.Redis, keys: KeySchema, max_age_s: float, reflect_lag_s: float = 0.0,
                 failure: Callable[[str, redis.RedisError], StoreError] | None = None) -> None:
        self.client = client
        self.keys = keys
        self.max_age_s = max_age_s
        self.reflect_lag_s = reflect_lag_s
        # How a Redis error is told: the snapshot store's (Redis named, password
        # scrubbed) when it shares the client.
        self.failure = failure or _plain_failure
        self._charge = client.register_script(_CHARGE)
        self._ttl = max(1, int(max_age_s) + 1)
        self._loads_parsed: dict[bytes, ChargeLoad | None] = {}

    @property
    def _keys(self) -> list[str]:
        return [self.keys.inflight, self.keys.inflight_load, self.keys.inflight_reflected]

    def job_key(self, tenant: str, job_id: str | None) -> str | None:
        """The key that holds a job's charge; raises ValueError for ids
        that must not become part of a key."""
        return None if job_id is None else self.keys.inflight_job(tenant, job_id)

    def charge(self, charge: Charge, by_galaxy: bool = True) -> bool:
        """Charge a placement and wait for Redis to confirm it; a job
        already charged moves its charge (never adds a second). False if
        the destination's figures already show a job charged that early.
        ``by_galaxy`` false (an admin placing a job by hand): the job's
        earlier charge is not taken for a failure where it went."""
        keys = [*self._keys, self.keys.health_placements, self.keys.health_returns]
        if charge.job_id is not None:
            keys += [self.keys.inflight_job(charge.tenant, charge.job_id),
                     self.keys.health_came_back(charge.tenant, charge.job_id)]
        args: list[str | float] = [charge.to_member(uuid.uuid4().hex[:12]), charge.charged_at,
                                   charge.charged_at - self.max_age_s, self._ttl,
                                   placement_field(charge.charged_at, charge.tenant, charge.destination),
                                   PLACEMENTS_TTL_S, placement_field(charge.charged_at, charge.tenant, ""),
                                   RETURN_AFTER_S if by_galaxy else ""]
        try:
            return bool(self._charge(keys=keys, args=args))
        except redis.RedisError as e:
            raise self.failure("charging a placement", e) from None

    def queue_trim(self, pipe: Any, live_at: Mapping[str, float], now: float) -> None:
        """Queue on ``pipe`` (the publish's transaction) the removal of the
        charges that figures with these newest live points show, and of
        those past ``max_age_s``. EVAL, not EVALSHA: inside MULTI a missing
        script could not be loaded and retried."""
        args: list[str | float] = [now - self.max_age_s, self._ttl]
        for dest_id, at in live_at.items():
            # To the millisecond: the loads' JSON (Redis's cjson) keeps 14
            # digits, and a reader must see the very time the script cut at.
            args += [dest_id, repr(round(at - self.reflect_lag_s, 3))]
        pipe.eval(_TRIM, 3, *self._keys, *args)

    def rank_read(self, destinations: Sequence[str] | None, tenant: str, job_id: str | None,
                  now: float) -> ChargeRead:
        """What a rank request at ``now`` reads of the charges on its
        candidates (None: on every destination, for the status page), for
        job ``job_id`` of ``tenant`` (None: a job without id)."""
        return ChargeRead(self.keys, None if destinations is None else list(dict.fromkeys(destinations)),
                          self.job_key(tenant, job_id), now - self.max_age_s, self._parse_load)

    def _parse_load(self, raw: bytes) -> ChargeLoad | None:
        """``parse_load``, once per distinct value: between two requests
        only the charged destinations' loads change."""
        load = self._loads_parsed.get(raw, _UNPARSED)
        if load is _UNPARSED:
            if len(self._loads_parsed) >= _LOADS_KEPT:
                self._loads_parsed.clear()
            load = self._loads_parsed[raw] = parse_load(raw)
        return load

    def read(self, destinations: Sequence[str] | None, now: float, tenant: str = DEFAULT_TENANT,
             job_id: str | None = None) -> ChargeState:
        """The charges on ``destinations`` as a rank request at ``now`` reads them."""
        spec = self.rank_read(destinations, tenant, job_id, now)
        try:
            pipe = self.client.pipeline(transaction=True)
            spec.queue(pipe)
            return spec.parse(pipe.execute())
        except redis.RedisError as e:
            raise self.failure("reading in-flight charges", e) from None

    def live_count(self, now: float) -> int:
        """How many charges are live at ``now`` (one command, whatever the number)."""
        try:
            return int(self.client.zcount(self.keys.inflight, now - self.max_age_s, "+inf"))
        except redis.RedisError as e:
            raise self.failure("counting in-flight charges", e) from None

    def members(self) -> list[Charge]:
        """Every live charge (tests, and people debugging)."""
        try:
            raw = self.client.zrange(self.keys.inflight, 0, -1)
        except redis.RedisError as e:
            raise self.failure("reading in-flight charges", e) from None
        return _charges(cast("list[bytes]", raw))


def _charges(members: Sequence[bytes | str]) -> list[Charge]:
    return [c for m in members if (c := Charge.from_member(m)) is not None]


def parse_load(raw: bytes | str) -> ChargeLoad | None:
    try:
        v = json.loads(raw)
        reflected = v.get("reflected")
        return ChargeLoad(int(v["n"]), float(v["cores"]), float(v["mem"]), float(v["core_s"]), int(v["timed"]),
                          None if reflected is None else float(reflected))
    except (ValueError, KeyError, TypeError):
        return None
