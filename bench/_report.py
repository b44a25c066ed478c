"""
What C{bench/run.py} measured, and its report: the Markdown tables and the
target summary.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Dict, List, Optional

SCENARIOS = (
    "nginx", "data", "rpr", "hit", "hit-br", "pass",
    "misses", "stream", "entries", "compress", "ws",
)
RATE_SCENARIOS = SCENARIOS[:6]


class Results:
    """
    What the scenarios measured, for the report.
    """

    def __init__(self) -> None:
        #: Rate rows: scenario -> list of per-round C{run_wrk} results.
        self.rounds: Dict[str, List[Dict[str, float]]] = {}
        #: Rate rows: scenario -> peak RSS of the server, KiB.
        self.rss: Dict[str, int] = {}
        #: Scenario -> why it has no figures.
        self.missing: Dict[str, str] = {}
        #: Scenario -> measured values, for the other scenarios.
        self.values: Dict[str, Dict[str, object]] = {}
        #: Warnings about the validity of a measurement.
        self.warnings: List[str] = []
        #: Every measured C{run_wrk} result, for the CPU used by others.
        self.background: List[Dict[str, float]] = []

    def median(self, name: str, field: str) -> Optional[float]:
        """
        @return: the median of C{field} over the rounds of C{name}.
        """
        values = [r[field] for r in self.rounds.get(name, ()) if field in r]
        return statistics.median(values) if values else None


LABELS = {
    "nginx": "nginx `proxy_cache` hit, 1 worker",
    "data": "twisted.web `static.Data` (bare `Site`, no log)",
    "rpr": "twisted.web `ReverseProxyResource` → origin",
    "hit": "phantom-frame hit, identity",
    "hit-br": "phantom-frame hit, `Accept-Encoding: br`",
    "pass": "phantom-frame pass-through (`cache_strategy = \"none\"`) → origin",
}


def _fmt(value: Optional[float], digits: int = 0) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:,.{digits}f}"


def _percent(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.0%}"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a and b else "—"


def report(args: argparse.Namespace, selected: List[str], results: Results, header: List[str]) -> None:
    """
    Print the tables and the target summary, in Markdown.
    """
    out: List[str] = list(header)
    nginx_rps = results.median("nginx", "rps")
    data_rps = results.median("data", "rps")
    rpr_rps = results.median("rpr", "rps")
    rate = [n for n in RATE_SCENARIOS if n in selected]
    if rate:
        out += [
            "",
            ("| # | scenario | req/s | p50 ms | p99 ms | CPU µs/req | server CPU | peak RSS MiB "
             "| ÷ nginx hit | ÷ twisted `Data` | ÷ `ReverseProxyResource` |"),
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in rate:
            number = SCENARIOS.index(name) + 1
            if name not in results.rounds:
                out.append(f"| {number} | {LABELS[name]} | {results.missing.get(name, 'not run')} "
                           "| | | | | | | | |")
                continue
            rps = results.median(name, "rps")
            rss = results.rss.get(name)
            out.append(
                f"| {number} | {LABELS[name]} | {_fmt(rps)} | {_fmt(results.median(name, 'p50'), 2)} "
                f"| {_fmt(results.median(name, 'p99'), 2)} | {_fmt(results.median(name, 'cpu_us'), 1)} "
                f"| {_percent(results.median(name, 'busy'))} | {_fmt(rss / 1024 if rss else None, 1)} | {_ratio(rps, nginx_rps)} "
                f"| {_ratio(rps, data_rps)} "
                f"| {_ratio(rps, rpr_rps) if name in ('rpr', 'pass') else ''} |"
            )
        out.append("")
        out.append(f"Median of {args.rounds} interleaved round(s) of `wrk -t1 -c50 -d{args.duration:g}s "
                   "--latency`, keep-alive, 10 KB HTML page. CPU µs/req, server CPU (the share of "
                   "one CPU it used) and peak RSS are the server process's; rows 4–6 are one "
                   "phantom-frame process.")
        for name in ("rpr", "pass"):
            if name in results.rounds:
                out.append(f"In row {SCENARIOS.index(name) + 1} the origin used "
                           f"{_fmt(results.median(name, 'origin_us'), 1)} µs/req "
                           f"({_percent(results.median(name, 'origin_busy'))} of its CPU, "
                           "shared with wrk).")

    other = [n for n in SCENARIOS[6:] if n in selected]
    if other:
        out += ["", "| # | measurement | result |", "|---:|---|---|"]
        for name in other:
            number = SCENARIOS.index(name) + 1
            v = results.values.get(name)
            if v is None:
                out.append(f"| {number} | {name} | {results.missing.get(name, 'not run')} |")
            elif name == "misses":
                kinds = ", ".join(f"{k} {c}" for k, c in sorted(v["kinds"].items()))
                statuses = ", ".join(f"{s}×{c}" for s, c in sorted(v["statuses"].items()))
                out.append(f"| {number} | {v['requests']} concurrent requests for one new key "
                           f"(origin answers in {args.slow * 1000:.0f} ms) | origin requests: "
                           f"**{v['origin']}**; answers {statuses} ({kinds}) in {v['seconds']:.2f} s |")
            elif name == "stream":
                out.append(f"| {number} | {v['mib']:.0f} MiB streamed body (not stored) | RSS "
                           f"{v['before']:.1f} → peak {v['peak']:.1f} MiB, growth **{v['growth']:.1f} MiB**; "
                           f"{v['mib'] / v['seconds']:.0f} MiB/s |")
            elif name == "entries":
                out.append(f"| {number} | {v['count']:,} cached entries | **{v['bytes']:.0f} bytes** "
                           f"per entry beyond the body |")
            elif name == "compress":
                out.append(f"| {number} | hit p99 (`wrk -c10`, br) alone / during 5 MB Brotli fills "
                           f"| {v['alone_p99']:.2f} ms / {v['busy_p99']:.2f} ms, ratio **{v['ratio']:.2f}** "
                           f"({v['alone_rps']:,.0f} / {v['busy_rps']:,.0f} req/s; {v['fills']} fills, "
                           f"median {v['fill_ms']:.0f} ms each) |")
            elif name == "ws":
                out.append(f"| {number} | WebSocket echo, {v['clients']} clients, {v['seconds']:g} s "
                           f"| tunnel {v['tunnel']:,.0f} msg/s, direct {v['direct']:,.0f} msg/s, "
                           f"ratio **{v['tunnel'] / v['direct']:.2f}** |")

    if results.background:
        other = [r["other"] for r in results.background]
        steal = [r["steal"] for r in results.background]
        out += ["", f"Processes outside the benchmark used {statistics.mean(other):.0%} of a CPU on "
                    f"average during the wrk runs (at most {max(other):.0%}); the hypervisor took "
                    f"{statistics.mean(steal):.0%}."]
    out += ["", "Targets:", ""]
    out += targets(args, selected, results)
    if results.warnings:
        out += ["", "Warnings:", ""]
        out += [f"- {w}" for w in results.warnings]
    print("\n".join(out))


def targets(args: argparse.Namespace, selected: List[str], results: Results) -> List[str]:
    """
    @return: one Markdown line per target, PASS, FAIL or SKIP with the
        figure measured.
    """
    lines: List[str] = []

    def verdict(ok: Optional[bool], text: str) -> None:
        mark = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        lines.append(f"- **{mark}** {text}")

    nginx_rps = results.median("nginx", "rps")
    for name, what in (("hit", "hit (identity)"), ("hit-br", "hit (br)")):
        if name not in selected:
            continue
        rps = results.median(name, "rps")
        if rps and nginx_rps:
            verdict(rps >= 0.5 * nginx_rps,
                    f"{what} ≥ 0.5 × nginx hit: {rps:,.0f} / {nginx_rps:,.0f} = {rps / nginx_rps:.2f}")
        else:
            verdict(None, f"{what} ≥ 0.5 × nginx hit: "
                          f"{results.missing.get('nginx') or results.missing.get(name) or 'nginx row not run'}")
    if "pass" in selected:
        rps, rpr = results.median("pass", "rps"), results.median("rpr", "rps")
        if rps and rpr:
            verdict(rps >= 5 * rpr, f"pass-through ≥ 5 × ReverseProxyResource: "
                                    f"{rps:,.0f} / {rpr:,.0f} = {rps / rpr:.2f}")
        else:
            verdict(None, "pass-through ≥ 5 × ReverseProxyResource: not measured")
    if "misses" in selected:
        v = results.values.get("misses")
        if v:
            ok = v["origin"] == 1 and v["statuses"].get(200, 0) == v["requests"]
            verdict(ok, f"{v['requests']} concurrent misses → 1 origin request: "
                        f"{v['origin']} origin request(s), {v['statuses'].get(200, 0)} answers 200")
        else:
            verdict(None, f"concurrent misses: {results.missing.get('misses', 'not measured')}")
    if "entries" in selected:
        v = results.values.get("entries")
        if v:
            verdict(v["bytes"] <= 1024, f"memory per entry ≤ 1 KiB: {v['bytes']:.0f} bytes")
        else:
            verdict(None, f"memory per entry: {results.missing.get('entries', 'not measured')}")
    if "stream" in selected:
        v = results.values.get("stream")
        if v:
            size = "1 GiB" if args.stream_mb == 1024 else f"{args.stream_mb} MiB (target is for 1 GiB)"
            mb = v["growth"] * 1.048576
            verdict(mb <= 20, f"streamed {size} ≤ 20 MB RSS growth: {mb:.1f} MB "
                              f"({v['growth']:.1f} MiB)")
        else:
            verdict(None, "streamed body RSS: not measured")
    if "compress" in selected:
        v = results.values.get("compress")
        if v:
            verdict(v["ratio"] <= 2, f"hit p99 during compressions ≤ 2 × alone: "
                                     f"{v['busy_p99']:.2f} / {v['alone_p99']:.2f} ms = {v['ratio']:.2f}")
        else:
            verdict(None, "hit p99 during compressions: not measured")
    return lines
