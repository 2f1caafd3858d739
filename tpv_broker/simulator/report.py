"""The simulator's output: a table for people, JSON for scripts, a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compare import POLICIES


def table(rows: list[dict[str, Any]]) -> str:
    header = ("load", "policy", "jobs", "mean wait s", "p95 wait s", "mean turnaround s", "p95 turnaround s",
              "util. min-max")
    lines = [header]
    for r in rows:
        util = r["utilisation"].values()
        lines.append((f"{r['load']:.0%}", r["policy"], str(r["jobs"]), f"{r['mean_wait_s']:.0f}",
                      f"{r['p95_wait_s']:.0f}", f"{r['mean_turnaround_s']:.0f}", f"{r['p95_turnaround_s']:.0f}",
                      f"{min(util):.2f}-{max(util):.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per load: broker with accounting against the oracle, the broker
    without accounting and the prototype (mean queue wait)."""
    out = []
    for load in sorted({r["load"] for r in rows}):
        by = {r["policy"]: r["mean_wait_s"] for r in rows if r["load"] == load}
        ours = by.get("broker_inflight")
        if not ours:
            continue
        out.append({
            "load": load,
            "vs_oracle": round(ours / by["oracle"], 2) if by.get("oracle") else None,
            "broker_without_vs_ours": round(by["broker"] / ours, 2) if "broker" in by else None,
            "prototype_vs_ours": round(by["prototype"] / ours, 2) if "prototype" in by else None,
        })
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = sorted({r["load"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in ((axes[0], "mean_wait_s", "mean queue wait (s)"),
                              (axes[1], "p95_wait_s", "p95 queue wait (s)")):
        for policy in POLICIES:
            ys = [next((r[metric] for r in rows if r["load"] == load and r["policy"] == policy), None)
                  for load in loads]
            if any(y is not None for y in ys):
                ax.plot([f"{x:.0%}" for x in loads], ys, marker="o", label=policy)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("offered load")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
