"""Result tables (markdown) and the targets, from ``latest.json``."""

from __future__ import annotations

import statistics
from typing import Any

# The service that only validates the request (bench/apps.py), measured only
# in the rounds that set the most candidates against the fewest.
FLOOR = "validate_only"


def _get(runs: list[dict[str, Any]], service: str, n: int, mode: str) -> dict[str, Any] | None:
    return next((r for r in runs if r["service"] == service and r["candidates"] == n and r["mode"] == mode), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _paired(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    """Median over rounds of a's figure / b's figure in the same round: the
    rounds alternate between services, so each pair ran moments apart and
    a burst of load from something else on the machine mostly cancels out."""
    if not a or not b or key not in a or key not in b:
        return None
    return _median_ratio(a[key], b[key])


def _median(values: list[float], digits: int) -> float | None:
    if not values:
        return None
    return round(statistics.median(values), digits)


def _median_ratio(xs: list[float], ys: list[float]) -> float | None:
    """Median of x / y over pairs taken side by side."""
    return _median([x / y for x, y in zip(xs, ys) if x and y], 2)


def _median_extra_us(his: list[float], los: list[float], extra: int) -> float | None:
    """Median over rounds of what one extra candidate adds, in us: (p50 at
    the most - p50 at the fewest, in ms) / the extra candidates."""
    return _median([(h - lo) * 1000 / extra for h, lo in zip(his, los)], 1)


def _p50_ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    v = _paired(a, b, "round_p50_ms")
    return v if v is not None else _ratio(a and a["p50_ms"], b and b["p50_ms"])


def _rps_ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    v = _paired(a, b, "round_rps")
    return v if v is not None else _ratio(a and a["throughput_rps"], b and b["throughput_rps"])


def rank_ratios(result: dict[str, Any]) -> dict[str, Any]:
    runs, ns = result["runs"], result["params"]["candidates"]
    out: dict[str, Any] = {}
    for n in ns:
        ours, lim, proto, lean = (_get(runs, s, n, "sequential") for s in ("ours", "limit", "prototype",
                                                                           "ours_noinflight"))
        c_ours, c_lim, c_proto, c_lean = (_get(runs, s, n, "concurrent") for s in ("ours", "limit", "prototype",
                                                                                   "ours_noinflight"))
        p_ours, p_lim, p_lean = (_get(runs, s, n, "paced") for s in ("ours", "limit", "ours_noinflight"))
        out[str(n)] = {
            "paced_p50_ours_over_limit": _p50_ratio(p_ours, p_lim),
            "paced_p50_noinflight_over_limit": _p50_ratio(p_lean, p_lim),
            "paced_p50_prototype_over_ours": _ratio(proto and proto["p50_ms"], p_ours and p_ours["p50_ms"]),
            "p50_noinflight_over_limit": _p50_ratio(lean, lim),
            "throughput_noinflight_over_limit": _rps_ratio(c_lean, c_lim),
            "p50_prototype_over_ours": _p50_ratio(proto, ours),
            "p50_ours_over_limit": _p50_ratio(ours, lim),
            "throughput_ours_over_limit": _rps_ratio(c_ours, c_lim),
            "throughput_ours_over_prototype": _rps_ratio(c_ours, c_proto),
        }
    lo, hi = min(ns), max(ns)
    for s in ("ours", "limit", FLOOR):
        paired = result.get("scaling", {}).get(s)
        if paired:
            # Rounds that alternate the two counts (bench.rank._scaling).
            rounds = paired["round_p50_ms"]
            out[f"{s}_p50_{hi}_over_{lo}"] = _median_ratio(rounds[str(hi)], rounds[str(lo)])
            out[f"{s}_us_per_extra_candidate"] = _median_extra_us(rounds[str(hi)], rounds[str(lo)], hi - lo)
        elif s != FLOOR:  # measured only in those rounds
            # Results from before: the counts ran minutes apart, pooled p50s.
            a, b = _get(runs, s, hi, "sequential"), _get(runs, s, lo, "sequential")
            out[f"{s}_p50_{hi}_over_{lo}"] = _ratio(a and a["p50_ms"], b and b["p50_ms"])
    return out


def rank_targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    r = rank_ratios(result)
    ns = result["params"]["candidates"]
    mid = "50" if 50 in ns else str(ns[len(ns) // 2])
    lo, hi = min(ns), max(ns)
    clients = result["params"]["clients"]
    rows = []

    def row(text: str, value: float | None, ok: bool | None, fmt: str) -> None:
        rows.append((text, "-" if value is None else fmt.format(value), ok))

    v = r[mid]["p50_prototype_over_ours"]
    row(f"p50 at {mid} candidates, prototype / ours >= 200", v, None if v is None else v >= 200, "{:.0f}x")
    v = r[mid]["p50_ours_over_limit"]
    row(f"p50 at {mid} candidates, ours / limit <= 2", v, None if v is None else v <= 2, "{:.2f}x")
    v = r[f"ours_p50_{hi}_over_{lo}"]
    row(f"ours: p50 at {hi} / p50 at {lo} candidates <= 1.5", v, None if v is None else v <= 1.5, "{:.2f}x")
    v = r[mid]["throughput_ours_over_limit"]
    row(f"throughput at {mid} candidates, {clients} clients, ours / limit >= 0.6", v,
        None if v is None else v >= 0.6, "{:.2f}")
    return rows


def _ok(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def rank_table(result: dict[str, Any]) -> str:
    runs = result["runs"]
    lines = ["| candidates | clients | service | p50 ms | p90 ms | p99 ms | req/s | requests |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for n in result["params"]["candidates"]:
        for mode in ("sequential", "paced", "concurrent"):
            for s in ("ours", "ours_noinflight", "limit", "prototype"):
                r = _get(runs, s, n, mode)
                if r:
                    clients = f"{r['clients']} paced" if mode == "paced" else str(r["clients"])
                    lines.append(f"| {n} | {clients} | {s} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
                                 f"{r['p99_ms']:.3f} | {r['throughput_rps']:.0f} | {r['requests']} |")
    ratios = rank_ratios(result)
    lines += ["", f"Ratios: median over the {result['params'].get('rounds', 1)} rounds of each measurement, each "
              "round's figure against the other service's in the same round (the services take turns round by "
              "round)."]
    ns = result["params"]["candidates"]
    lo, hi = min(ns), max(ns)
    if result.get("scaling"):
        floor = ratios.get(f"{FLOOR}_p50_{hi}_over_{lo}")
        lines.append(f"p50 at {hi} against {lo} candidates (one client, back to back), in rounds that alternate the "
                     f"two counts, median of the per-round ratios: ours {ratios[f'ours_p50_{hi}_over_{lo}']}x, "
                     f"limit {ratios.get(f'limit_p50_{hi}_over_{lo}')}x"
                     + (f", {FLOOR} (our request model, nothing else) {floor}x." if floor else "."))
        extra = {s: ratios.get(f"{s}_us_per_extra_candidate") for s in ("ours", "limit", FLOOR)}
        lines.append("Each extra candidate, median over those rounds of (p50 at the most - p50 at the fewest) / "
                     f"{hi - lo}: " + ", ".join(f"{s} {v} us" for s, v in extra.items() if v is not None) + ".")
    elif lo != hi:
        lines.append(f"p50 at {hi} against {lo} candidates: pooled p50s of the runs above, minutes apart.")
    lines += ["", "| candidates | p50 prototype/ours | p50 ours/limit | req/s ours/limit (concurrent) | "
              "req/s ours/prototype (concurrent) | p50 ours_noinflight/limit | req/s ours_noinflight/limit |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in result["params"]["candidates"]:
        x = ratios[str(n)]
        f = lambda v, suffix="x": "-" if v is None else f"{v:g}{suffix}"
        lines.append(f"| {n} | {f(x['p50_prototype_over_ours'])} | {f(x['p50_ours_over_limit'])} | "
                     f"{f(x['throughput_ours_over_limit'], '')} | {f(x['throughput_ours_over_prototype'])} | "
                     f"{f(x['p50_noinflight_over_limit'])} | {f(x['throughput_noinflight_over_limit'], '')} |")
    pace = result["params"].get("pace_s")
    if pace:
        lines += ["", f"Paced (one client, {pace * 1000:g} ms idle between an answer and the next request, as TPV "
                  "asks once per job rather than back to back; the in-flight charge is written after the answer "
                  "is sent, so only a back-to-back client waits for it):", "",
                  "| candidates | p50 ours/limit | p50 ours_noinflight/limit | p50 prototype (back to back) / ours |",
                  "|---:|---:|---:|---:|"]
        for n in result["params"]["candidates"]:
            x = ratios[str(n)]
            f = lambda v: "-" if v is None else f"{v:g}x"  # noqa: E731
            lines.append(f"| {n} | {f(x['paced_p50_ours_over_limit'])} | {f(x['paced_p50_noinflight_over_limit'])} | "
                         f"{f(x['paced_p50_prototype_over_ours'])} |")
    cal = result.get("calibration")
    if cal:
        ref = cal["reference_p50_ms"]
        lines += ["", f"Calibration: this reimplementation of the prototype on the prototype's own data "
                  f"({cal['destinations']} destinations): p50 {cal['p50_ms']['5']:.1f} ms at 5 and "
                  f"{cal['p50_ms']['13']:.1f} ms at 13 candidates; the original measured {ref['5']:g} and "
                  f"{ref['13']:g} ms there (and {ref['50']:g} ms at 50)."]
        ours50 = _get(runs, "ours", 50, "sequential")
        if ours50:
            lines.append(f"Against the original's own {ref['50']:g} ms at 50 candidates, ours at 50 is "
                         f"{ref['50'] / ours50['p50_ms']:.0f}x faster.")
    lines += ["", "| target | measured | |", "|---|---:|---|"]
    lines += [f"| {t} | {v} | {_ok(ok)} |" for t, v, ok in rank_targets(result)]
    return "\n".join(lines)


def collector_table(result: dict[str, Any]) -> str:
    lines = ["| destinations x tools | run-time series | cycle | wall s (median) | InfluxDB HTTP requests | "
             "InfluxQL statements | Redis commands | Redis round trips | peak RSS MB | peak Python alloc MB |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["sizes"]:
        for kind in ("steady", "after_refresh", "refresh_job", "cold", "uncached"):
            c = r.get(kind)
            if not c:
                continue
            lines.append(
                f"| {r['destinations']} x {r['tools']} | {r['series_run_time']} | {kind} | {c['wall_s_median']:.3f} | "
                f"{c['influx_requests']} | {c['influx_statements']} | {c['redis_commands']} | "
                f"{c['redis_round_trips']} | {c['peak_rss_mb']:.0f} | {c['peak_alloc_mb']:.1f} |")
    lines += ["", "| target | measured | |", "|---|---:|---|"]
    for t, v, ok in collector_targets(result):
        lines.append(f"| {t} | {v} | {_ok(ok)} |")
    return "\n".join(lines)


def collector_targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    big = max(result["sizes"], key=lambda r: r["destinations"])
    kinds = ("steady", "after_refresh", "refresh_job", "cold", "uncached")
    rows: list[tuple[str, str, bool | None]] = []
    for kind in kinds:
        c = big.get(kind)
        if c:
            rows.append((f"{kind} at {big['destinations']} x {big['tools']} < 2 s", f"{c['wall_s_median']:.2f} s",
                         c["wall_s_median"] < 2.0))
    for what in ("influx_requests", "influx_statements"):
        seen = {kind: sorted({r[kind][what] for r in result["sizes"] if r.get(kind)}) for kind in kinds}
        const = all(len(v) <= 1 for v in seen.values())
        rows.append((f"{what.replace('_', ' ')} per cycle or job, constant across sizes",
                     ", ".join(f"{k}: {v[0]}" if len(v) == 1 else f"{k}: {v}" for k, v in seen.items() if v), const))
    return rows


def _machine_line(m: dict[str, Any]) -> str:
    if not m:
        return "Machine: not recorded."
    return (f"Machine: {m.get('cpus')} CPUs ({m.get('cpu_model')}), {m.get('memory_gb')} GB, Python {m.get('python')}, "
            f"Redis {m.get('redis')}, {m.get('influxdb')}; measured {m.get('date_utc')}.")


def render_markdown(data: dict[str, Any]) -> str:
    out = ["# Benchmark results (generated by bench/; do not edit)", ""]
    if "rank" in data:
        r = data["rank"]
        out += [f"## Rank path{' (TINY mode: not a measurement)' if r.get('tiny') else ''}", "",
                _machine_line(r.get("machine", {})), "",
                f"Snapshot: {r['dataset']['destinations']} destinations x {r['dataset']['tools']} tools "
                f"({r['dataset']['series_run_time']} run-time series); collector: {r['snapshot']}. "
                f"gunicorn for all three services: {r['gunicorn']}.", "", rank_table(r), ""]
    if "collector" in data:
        c = data["collector"]
        out += [f"## Collector cycle{' (TINY mode: not a measurement)' if c.get('tiny') else ''}", "",
                _machine_line(c.get("machine", {})), "", c.get("note", ""), "", collector_table(c), ""]
    return "\n".join(out)
