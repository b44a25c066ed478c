"""
C{phantom-frame top}: a live view of a running proxy, as C{varnishstat}:
per server, requests per second, hit ratio, bytes served and stored,
upstream latency and errors, then the busiest keys.

Rates come from two samples of the control site (C{/stats}, C{/metrics},
C{/top_keys}) taken an interval apart. The view is plain text; on a
terminal each frame clears the screen first (ANSI), so nothing beyond the
standard library is needed.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, TextIO
from urllib.parse import quote

import attr
from prometheus_client.parser import text_string_to_metric_families

from phantom_frame.config.check import size
from phantom_frame.ops.console import ratio, table
from phantom_frame.ops.control_client import ControlClient, ControlError

__all__ = ["CLEAR", "HEADER", "Sample", "frame", "rows", "take_sample", "top"]

#: Moves the cursor home and clears the screen.
CLEAR = "\x1b[H\x1b[2J"

#: The columns of the per-server table.
HEADER = ("SERVER", "REQ/S", "HIT NOW", "HIT ALL", "SERVED/S", "STORED", "ENTRIES", "UPSTREAM", "ERR/S")

Metrics = Dict[str, Dict[str, float]]


@attr.s(frozen=True, auto_attribs=True)
class Sample:
    """
    What the control site showed at one moment.

    @ivar at: when, in seconds (on a monotonic clock).
    @ivar stats: C{GET /stats}'s servers.
    @ivar metrics: for each sample name of C{GET /metrics}, its values
        summed by C{server} label.
    @ivar keys: C{GET /top_keys}'s servers.
    """

    at: float
    stats: Dict[str, Dict[str, int]]
    metrics: Metrics
    keys: Dict[str, Dict[str, Any]]


def by_server(text: str) -> Metrics:
    """
    @param text: the Prometheus text format.
    @return: for each sample name, the sum of its values by C{server}
        label (C{""} for samples without one).
    """
    found: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            per = found.setdefault(sample.name, {})
            server = sample.labels.get("server", "")
            if sample.name == "phantom_frame_requests_total" and sample.labels.get("status") == "5xx":
                errors = found.setdefault("phantom_frame_requests_5xx", {})
                errors[server] = errors.get(server, 0.0) + sample.value
            per[server] = per.get(server, 0.0) + sample.value
    return found


def take_sample(client: ControlClient, keys: int = 10, clock: Callable[[], float] = time.monotonic) -> Sample:
    """
    @param keys: how many busiest keys to ask for, per server.
    @raise ControlError: when the control site cannot be used.
    """
    stats = client.json("GET", "/stats").get("servers", {})
    metrics = by_server(client.text("/metrics"))
    top_keys = client.json("GET", f"/top_keys?n={quote(str(keys))}").get("servers", {})
    return Sample(clock(), stats, metrics, top_keys)


def _delta(before: Sample, after: Sample, name: str, server: str) -> float:
    return max(0.0, after.metrics.get(name, {}).get(server, 0.0) - before.metrics.get(name, {}).get(server, 0.0))


def _rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def rows(before: Sample, after: Sample) -> List[List[str]]:
    """
    @return: one row of L{HEADER} per server of C{after}: requests, body
        bytes and 5xx answers per second and the hit ratio over the time
        between the samples, the hit ratio since the start, the stored size
        and entries as C{after} shows them, and the mean time to the
        origin's response heads in between.
    """
    elapsed = max(after.at - before.at, 1e-9)
    found = []
    for name, now in after.stats.items():
        then = before.stats.get(name, {})
        hits = now.get("hits", 0) - then.get("hits", 0)
        misses = now.get("misses", 0) - then.get("misses", 0)
        requests = _delta(before, after, "phantom_frame_requests_total", name)
        served = _delta(before, after, "phantom_frame_response_bytes_total", name)
        count = _delta(before, after, "phantom_frame_upstream_request_duration_seconds_count", name)
        total = _delta(before, after, "phantom_frame_upstream_request_duration_seconds_sum", name)
        errors = _delta(before, after, "phantom_frame_requests_5xx", name)
        found.append(
            [
                name,
                _rate(requests / elapsed),
                ratio(hits, misses),
                ratio(now.get("hits", 0), now.get("misses", 0)),
                size(int(served / elapsed)) + "/s",
                size(now.get("bytes", 0)),
                str(now.get("entries", 0)),
                "-" if count <= 0 else f"{1000 * total / count:.1f} ms",
                _rate(errors / elapsed),
            ]
        )
    return found


def _key_lines(before: Sample, after: Sample, width: int) -> List[str]:
    """
    @return: the busiest keys of each server: hits since counting began
        and hits per second between the samples (C{-} for a key the first
        sample did not list).
    """
    elapsed = max(after.at - before.at, 1e-9)
    listed = []
    for name, answer in after.keys.items():
        earlier = {k["key"]: k["hits"] for k in before.keys.get(name, {}).get("keys", [])}
        for item in answer.get("keys", []):
            previous = earlier.get(item["key"])
            rate = "-" if previous is None else _rate(max(0, item["hits"] - previous) / elapsed) + "/s"
            listed.append([name, item["key"], str(item["hits"]), rate])
    if not listed:
        return ["  (no hits yet)"]
    lines = table(("SERVER", "KEY", "HITS", "NOW"), listed)
    return ["  " + line[:width] for line in lines]


def frame(before: Sample, after: Sample, where: str, interval: float, clock: Callable[[], float] = time.time) -> str:
    """
    @param where: the control site's address, for the title.
    @param interval: the refresh interval, for the title.
    @return: one screen: a title, the per-server table, the busiest keys.
    """
    title = f"phantom-frame top  {where}  every {interval:g}s  {time.strftime('%H:%M:%S', time.localtime(clock()))}"
    lines = [title, ""]
    lines.extend(table(HEADER, rows(before, after)))
    lines.extend(["", "Busiest keys:"])
    lines.extend(_key_lines(before, after, 160))
    return "\n".join(lines) + "\n"


def top(
    client: ControlClient,
    stdout: TextIO,
    stderr: TextIO,
    once: bool = False,
    interval: float = 1.0,
    keys: int = 10,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """
    Show frames every C{interval} seconds until interrupted (Ctrl-C), or
    one frame with C{once}.

    @param sleep: waits between samples.
    @param clock: times the samples.
    @return: 0, or 1 when the control site cannot be used at first (or at
        all, with C{once}); later failures are shown in the frame and the
        view goes on.
    """
    live = not once and getattr(stdout, "isatty", lambda: False)()
    try:
        try:
            before = take_sample(client, keys, clock)
        except ControlError as e:
            stderr.write(f"phantom-frame: {e}\n")
            return 1
        while True:
            sleep(interval)
            try:
                after: Optional[Sample] = take_sample(client, keys, clock)
            except ControlError as e:
                if once:
                    stderr.write(f"phantom-frame: {e}\n")
                    return 1
                after = None
                text = f"phantom-frame top  {client.address}\n\n{e}\n"
            if after is not None:
                text = frame(before, after, str(client.address), interval)
                before = after
            stdout.write((CLEAR if live else "") + text)
            stdout.flush()
            if once:
                return 0
            if not live:
                stdout.write("\n")
    except KeyboardInterrupt:
        return 0
