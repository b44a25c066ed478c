"""
What C{bench/run.py} measured, and its report: the Markdown tables and the
target summary.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Dict, List, Optional

from scale import report_lines

SCENARIOS = (
    "nginx", "nginx-pass", "ceiling", "data", "rpr",
    "hit", "hit-br", "hit-vary", "hit-304", "hit-range", "hit-head",
    "pass", "pass-post", "fill", "fill-plain", "pass-new",
    "misses", "stream", "entries", "compress", "ws",
    "workers", "redis-l1",
)
#: The scenarios measured with wrk, in interleaved rounds.
RATE_SCENARIOS = SCENARIOS[:SCENARIOS.index("misses")]
#: The scenarios of the HTTP run (rates and concurrent misses).
HTTP_SCENARIOS = SCENARIOS[:SCENARIOS.index("misses") + 1]
#: The hit kinds whose cost is compared with the plain hit's.
HIT_KINDS = ("hit-br", "hit-vary", "hit-304", "hit-range", "hit-head")


#: The CPU targets on CPython (PyPy: hit 1.0, pass 0.6; C{run.py} sets them).
DEFAULT_TARGETS = {"hit": 0.45, "pass": 0.30}
PYPY_TARGETS = {"hit": 1.0, "pass": 0.6}


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
    "nginx-pass": "nginx `proxy_pass`, keep-alive upstream",
    "ceiling": "raw Twisted `Protocol`, canned answer",
    "data": "twisted.web `static.Data` (bare `Site`, no log)",
    "rpr": "twisted.web `ReverseProxyResource` → origin",
    "hit": "phantom-frame hit, identity",
    "hit-br": "phantom-frame hit, `Accept-Encoding: br`",
    "hit-vary": "phantom-frame hit, Next.js `Vary`, br",
    "hit-304": "phantom-frame hit, `If-None-Match` → 304",
    "hit-range": "phantom-frame hit, `Range` → 206",
    "hit-head": "phantom-frame hit, HEAD",
    "pass": "phantom-frame pass-through (`cache_strategy = \"none\"`) → origin",
    "pass-post": "phantom-frame pass-through, 1 MB POST",
    "fill": "phantom-frame fill (a new key every request)",
    "fill-plain": "phantom-frame fill, stored uncompressed (`compress_strategy = \"none\"`)",
    "pass-new": "phantom-frame pass-through, a new path every request",
}

#: The scale-out scenarios (C{bench/scale.py}), in the report.
SCALE_LABELS = {
    "workers": "hits with `workers = 1` and `workers = 2`",
    "redis-l1": "hits read from Redis (L1 misses) next to memory hits",
}

#: What each row's CPU is compared with (the reference's CPU ÷ the row's).
REFERENCES = {
    "hit": "nginx", "hit-br": "nginx", "hit-vary": "nginx", "hit-304": "nginx",
    "hit-range": "nginx", "hit-head": "nginx", "ceiling": "nginx", "data": "nginx",
    "pass": "nginx-pass", "pass-post": "nginx-pass", "fill": "nginx-pass", "fill-plain": "nginx-pass",
    "pass-new": "nginx-pass", "rpr": "nginx-pass",
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
    rate = [n for n in RATE_SCENARIOS if n in selected]
    if rate:
        out += [
            "",
            ("| # | scenario | CPU µs/req | nginx ÷ this (CPU) | ÷ plain hit (CPU) | req/s "
             "| p50 ms | p99 ms | server CPU | peak RSS MiB |"),
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in rate:
            number = SCENARIOS.index(name) + 1
            if name not in results.rounds:
                out.append(f"| {number} | {LABELS[name]} | {results.missing.get(name, 'not run')} "
                           "| | | | | | | | |")
                continue
            rps = results.median(name, "rps")
            rss = results.rss.get(name)
            cpu = results.median(name, "cpu_us")
            reference = REFERENCES.get(name)
            against = _ratio(results.median(reference, "cpu_us"), cpu) if reference else ""
            if against and against != "—":
                against += f" ({reference})" if reference != "nginx" else ""
            kind = _ratio(cpu, results.median("hit", "cpu_us")) if name in HIT_KINDS else ""
            out.append(
                f"| {number} | {LABELS[name]} | {_fmt(cpu, 1)} | {against} | {kind} | {_fmt(rps)} "
                f"| {_fmt(results.median(name, 'p50'), 2)} | {_fmt(results.median(name, 'p99'), 2)} "
                f"| {_percent(results.median(name, 'busy'))} | {_fmt(rss / 1024 if rss else None, 1)} |"
            )
        out.append("")
        out.append(f"Median of {args.rounds} interleaved round(s) of `wrk -t1 -c50 -d{args.duration:g}s "
                   "--latency`, keep-alive, 10 KB HTML page. CPU µs/req, server CPU (the share of "
                   "one CPU it used) and peak RSS are the server process's (nginx's worker for "
                   "nginx); the phantom-frame rows are one process, but the fills' (another, so that what they store and evict weighs on no other row). \"nginx ÷ this\" is nginx's "
                   "CPU per request divided by the row's (its `proxy_cache` hit for hits, its "
                   "`proxy_pass` for the rows that reach the origin): the share of nginx's "
                   "efficiency the row reaches. req/s is given beside it, not compared: `wrk -t1` "
                   "saturates before nginx does.")
        for name in ("rpr", "pass", "pass-post", "fill", "fill-plain", "pass-new"):
            if name in results.rounds:
                out.append(f"In row {SCENARIOS.index(name) + 1} the origin used "
                           f"{_fmt(results.median(name, 'origin_us'), 1)} µs/req "
                           f"({_percent(results.median(name, 'origin_busy'))} of its CPU, "
                           "shared with wrk).")

    other = [n for n in SCENARIOS[len(RATE_SCENARIOS):] if n in selected]
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
                out.append(f"| {number} | hit p99 (`wrk -c10`, br) alone / during 5 MB Brotli compressions "
                           f"| {v['alone_p99']:.2f} ms / {v['busy_p99']:.2f} ms, ratio **{v['ratio']:.2f}** "
                           f"({v['alone_rps']:,.0f} / {v['busy_rps']:,.0f} req/s; {v['started']} started, "
                           f"{v['fills']} done, median {v['fill_ms']:.0f} ms each) |")
            elif name in ("workers", "redis-l1"):
                out.append(f"| {number} | {name}: {SCALE_LABELS[name]} | in the table below |")
            elif name == "ws":
                out.append(f"| {number} | WebSocket echo, {v['clients']} clients, {v['seconds']:g} s "
                           f"| tunnel {v['tunnel']:,.0f} msg/s, direct {v['direct']:,.0f} msg/s, "
                           f"ratio **{v['tunnel'] / v['direct']:.2f}** |")

    for name in ("workers", "redis-l1"):
        if name in selected and name in results.values:
            out += ["", f"{SCALE_LABELS[name][0].upper()}{SCALE_LABELS[name][1:]}:", ""]
            out += report_lines(name, results.values[name])

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

    def cpu_target(name: str, reference: str, bound: float, text: str, lower: bool = True) -> None:
        """
        A target on CPU per request: C{reference}'s CPU ÷ C{name}'s at least
        C{bound} (C{lower}), or C{name}'s ÷ C{reference}'s at most C{bound}.
        """
        if name not in selected:
            return
        mine, theirs = results.median(name, "cpu_us"), results.median(reference, "cpu_us")
        if not (mine and theirs):
            verdict(None, f"{text}: {results.missing.get(reference) or results.missing.get(name) or 'not measured'}")
        elif lower:
            verdict(theirs / mine >= bound, f"{text}: {theirs:.1f} / {mine:.1f} µs = {theirs / mine:.2f}")
        else:
            verdict(mine / theirs <= bound, f"{text}: {mine:.1f} / {theirs:.1f} µs = {mine / theirs:.2f}")

    limits = getattr(args, "targets", None) or DEFAULT_TARGETS
    cpu_target("hit", "nginx", limits["hit"], f"plain hit ≥ {limits['hit']} × nginx `proxy_cache` hit (CPU)")
    for kind in HIT_KINDS:
        cpu_target(kind, "hit", 1.25, f"{kind} ≤ 1.25 × the plain hit (CPU)", lower=False)
    cpu_target("pass", "nginx-pass", limits["pass"],
               f"pass-through ≥ {limits['pass']} × nginx `proxy_pass` (CPU)")
    cpu_target("pass", "rpr", 5.0, "pass-through ≥ 5 × `ReverseProxyResource` (CPU)")
    cpu_target("fill", "pass", 3.0, "fill ≤ 3 × pass-through (CPU)", lower=False)
    cpu_target("fill-plain", "pass", 3.0, "fill stored uncompressed ≤ 3 × pass-through (CPU)", lower=False)
    cpu_target("fill", "pass-new", 3.0, "fill ≤ 3 × pass-through of new paths (CPU, the same requests)",
               lower=False)
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
