"""In-flight charges as data: one placement (``Charge``), the sums of a
destination's live charges (``ChargeLoad``, what Redis keeps per
destination) and what a rank request reads of them (``ChargeState``). The
arithmetic is in ``inflight.py``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tpv_broker.ids import DEFAULT_TENANT


@dataclass(frozen=True)
class Charge:
    """A placement the API made that the metrics may not show yet."""

    destination: str
    cores: float
    mem: float  # GB
    charged_at: float  # epoch s
    job_id: str | None = None
    # Expected run time on that destination (s), when known: what a charge
    # by work (inflight.charge_by: work) weighs the queued job by.
    run_s: float | None = None
    # The Galaxy server the job belongs to: job 4711 of one Galaxy is not
    # job 4711 of another.
    tenant: str = DEFAULT_TENANT

    def to_member(self, nonce: str) -> str:
        """The sorted-set member: readable JSON, unique by its nonce."""
        return json.dumps(
            {"d": self.destination, "c": self.cores, "m": self.mem, "t": self.charged_at, "g": self.tenant,
             **({"j": self.job_id} if self.job_id is not None else {}),
             **({"r": self.run_s} if self.run_s is not None else {}), "n": nonce},
            separators=(",", ":"),
        )

    @classmethod
    def from_member(cls, raw: bytes | str) -> Charge | None:
        """None for a value that is no charge of the sums: unreadable,
        written by an API from before them (no tenant), or a refused
        charge a job's key remembers; none of them entered the sums, and
        must not be taken out of them."""
        try:
            v = json.loads(raw)
            if v.get("refused"):
                return None
            run, job = v.get("r"), v.get("j")
            return cls(str(v["d"]), float(v["c"]), float(v["m"]), float(v["t"]),
                       None if job is None else str(job), None if run is None else float(run), str(v["g"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


# Far below a core, a megabyte or a core-second; far above float drift.
_SUM_DIGITS = 6


@dataclass(frozen=True)
class ChargeLoad:
    """The sums of one destination's live charges."""

    count: int = 0
    cores: float = 0.0
    mem: float = 0.0  # GB
    # Cores x expected run time (s), over the charges whose run time is
    # known (``timed`` of them): what a charge by work weighs.
    core_s: float = 0.0
    timed: int = 0
    # The published figures show every charge made here before this time
    # (epoch s; None: no figures yet): those are not in the sums.
    reflected: float | None = None

    def __post_init__(self) -> None:
        # Float sums that gained and lost charges drift (0.4 + 1.8 - 1.8 is
        # 0.40000000000000013): a job ranked again, its own charge taken
        # out, then saw 3.5999999999999996 GB free where it had seen 3.6,
        # one slot of 1.8 GB fewer, and the order flipped on every rank.
        # Rounded alike wherever sums are made, both rankings see 0.4.
        for name in ("cores", "mem", "core_s"):
            object.__setattr__(self, name, round(getattr(self, name), _SUM_DIGITS))

    def plus(self, c: Charge) -> ChargeLoad:
        """With ``c`` added, as the charge script adds it in Redis."""
        return ChargeLoad(self.count + 1, self.cores + c.cores, self.mem + c.mem,
                          self.core_s + _core_s(c), self.timed + (c.run_s is not None), self.reflected)

    def without(self, c: Charge) -> ChargeLoad:
        if self.count <= 1:
            # Exact zeros, whatever the float sums drifted to.
            return ChargeLoad(reflected=self.reflected)
        return ChargeLoad(self.count - 1, self.cores - c.cores, self.mem - c.mem,
                          self.core_s - _core_s(c), self.timed - (c.run_s is not None), self.reflected)

    def holds(self, c: Charge, now: float, max_age_s: float) -> bool:
        """Whether these sums, as Redis keeps them, still hold ``c`` (a
        charge that was made here): not if the figures show it (the
        collector took it out) or it is past its age (taken out by the
        next charge or publish, or by ``counted_loads``)."""
        return c.charged_at >= now - max_age_s and (self.reflected is None or c.charged_at >= self.reflected)


def _core_s(c: Charge) -> float:
    return c.cores * c.run_s if c.run_s is not None else 0.0


@dataclass(frozen=True)
class ChargeState:
    """What Redis holds about the charges on some destinations, as read:
    ``loads``, the sums of the charges not yet removed (destinations with
    none are absent); ``expired``, charges past ``max_age_s`` that Redis
    has not removed yet; ``own``, the ranked job's current charge."""

    loads: Mapping[str, ChargeLoad] = field(default_factory=dict)
    expired: Sequence[Charge] = ()
    own: Charge | None = None
