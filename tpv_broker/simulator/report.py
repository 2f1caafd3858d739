"""The simulator's output: tables for people, JSON for scripts, a plot.
Rows are one run each (load, seed, policy); summaries and ratios are over
the seeds of a load, so differences under noise show as such."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from .compare import POLICIES, VARIANTS

METRICS = ("mean_wait_s", "p95_wait_s", "mean_turnaround_s", "p95_turnaround_s")

# name -> (numerator, denominator, target, "le" or "ge"), all on mean queue wait.
RATIOS: dict[str, tuple[str, str, float | None, str]] = {
    "ours_vs_oracle": ("broker_inflight", "oracle", 1.3, "le"),
    "ours_vs_oracle_start": ("broker_inflight", "oracle_start", 1.3, "le"),
    "broker_without_vs_ours": ("broker", "broker_inflight", 3.0, "ge"),
    "prototype_vs_ours": ("prototype", "broker_inflight", 3.0, "ge"),
    # The most any policy could gain over these (the start-time oracle
    # sees everything): a ratio above it is out of reach by construction.
    "broker_without_vs_oracle_start": ("broker", "oracle_start", None, "ge"),
    "prototype_vs_oracle_start": ("prototype", "oracle_start", None, "ge"),
}


def spread(values: list[float]) -> dict[str, float]:
    """mean, sample standard deviation (0 for one value), min, median, max."""
    return {
        "mean": round(statistics.fmean(values), 2),
        "sd": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def _order(policies: set[str]) -> list[str]:
    known = [p for p in POLICIES + VARIANTS if p in policies]
    return known + sorted(policies - set(known))


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per load and policy, each metric's spread over the seeds, and the
    utilisation of the least and the most used site (means over seeds)."""
    out = []
    for load in sorted({r["load"] for r in rows}):
        at = [r for r in rows if r["load"] == load]
        for policy in _order({r["policy"] for r in at}):
            runs = [r for r in at if r["policy"] == policy]
            out.append({
                "load": load,
                "policy": policy,
                "seeds": len(runs),
                "jobs": round(statistics.fmean(r["jobs"] for r in runs)),
                **{m: spread([r[m] for r in runs]) for m in METRICS},
                "utilisation_min": round(statistics.fmean(min(r["utilisation"].values()) for r in runs), 3),
                "utilisation_max": round(statistics.fmean(max(r["utilisation"].values()) for r in runs), 3),
            })
    return out


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per load, each ratio of mean queue waits in RATIOS: per seed (on the
    same arrivals), its spread, how many seeds meet the target, and the
    ratio of the waits pooled over all seeds."""
    out = []
    for load in sorted({r["load"] for r in rows}):
        wait = {(r["seed"], r["policy"]): r["mean_wait_s"] for r in rows if r["load"] == load}
        seeds = sorted({s for s, _ in wait})
        entry: dict[str, Any] = {
            "load": load,
            "offered_load": {s: next(r["offered_load"] for r in rows if r["load"] == load and r["seed"] == s)
                             for s in seeds},
        }
        for name, (num, den, target, sense) in RATIOS.items():
            pairs = [(s, wait[s, num], wait[s, den]) for s in seeds if (s, num) in wait and (s, den) in wait]
            if not pairs:
                continue
            per_seed = {s: (a / b if b > 0 else math.inf) for s, a, b in pairs}
            stats: dict[str, Any] = {"per_seed": {s: round(v, 2) for s, v in per_seed.items()},
                                     **spread(list(per_seed.values())),
                                     "pooled": round(sum(a for _, a, _ in pairs) / sum(b for _, _, b in pairs), 2)}
            if target is not None:
                stats["target"] = f"{'<=' if sense == 'le' else '>='} {target:g}"
                stats["seeds_meeting_target"] = sum(
                    (v <= target) if sense == "le" else (v >= target) for v in per_seed.values())
            entry[name] = stats
        out.append(entry)
    return out


def _pm(s: dict[str, float]) -> str:
    return f"{s['mean']:.0f} ± {s['sd']:.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Mean ± standard deviation over the seeds, per load and policy."""
    header = ("load", "policy", "seeds", "jobs", "mean wait s", "p95 wait s", "mean turnaround s",
              "p95 turnaround s", "util. min-max")
    lines = [header]
    for r in summary(rows):
        lines.append((f"{r['load']:.0%}", r["policy"], str(r["seeds"]), str(r["jobs"]), _pm(r["mean_wait_s"]),
                      _pm(r["p95_wait_s"]), _pm(r["mean_turnaround_s"]), _pm(r["p95_turnaround_s"]),
                      f"{r['utilisation_min']:.2f}-{r['utilisation_max']:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def ratio_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in ratios(rows):
        offered = ", ".join(f"{v:.2f}" for v in r["offered_load"].values())
        out.append(f"load {r['load']:.0%} (offered per seed: {offered}):")
        for name in RATIOS:
            if name in r:
                s = r[name]
                met = f"; target {s['target']}: {s['seeds_meeting_target']}/{len(s['per_seed'])} seeds" \
                    if "target" in s else ""
                out.append(f"  {name}: mean {s['mean']} ± {s['sd']} (median {s['median']}, {s['min']}-{s['max']}; "
                           f"pooled {s['pooled']}){met}")
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = summary(rows)
    loads = sorted({r["load"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    for policy in _order({r["policy"] for r in rows}):
        pts = [(i, s["mean_wait_s"]) for i, load in enumerate(loads)
               for s in summ if s["load"] == load and s["policy"] == policy]
        if not pts:
            continue
        xs = [i for i, _ in pts]
        ys = [max(s["mean"], 0.1) for _, s in pts]
        below = [y - max(s["min"], 0.1) for y, (_, s) in zip(ys, pts, strict=True)]
        above = [s["max"] - y for y, (_, s) in zip(ys, pts, strict=True)]
        err = [below, above]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=policy)
    ax.set_xticks(range(len(loads)), [f"{x:.0%}" for x in loads])
    ax.set_yscale("log")
    ax.set_title("mean queue wait (s): mean over seeds, bars min-max")
    ax.set_xlabel("nominal offered load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    style = {"broker_without_vs_ours": ("o", "broker without charges / with"),
             "prototype_vs_ours": ("s", "prototype / broker with charges"),
             "broker_without_vs_oracle_start": ("x", "broker without / start-time oracle (ceiling)")}
    for name, (marker, label) in style.items():
        xs, ys = [], []
        for r in ratios(rows):
            for seed, v in r.get(name, {}).get("per_seed", {}).items():
                xs.append(r["offered_load"][seed])
                ys.append(v)
        if xs:
            ax.scatter(xs, ys, marker=marker, label=label)
    ax.axhline(3.0, color="grey", linestyle="--", linewidth=1)
    ax.text(ax.get_xlim()[0], 3.1, " target 3x", color="grey", fontsize=8, va="bottom")
    ax.set_yscale("log")
    ax.set_title("mean-wait ratio per run vs the load its arrivals really offered")
    ax.set_xlabel("offered load of the run (core-seconds brought / capacity)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
