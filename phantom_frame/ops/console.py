"""
The command-line views of the control site: C{phantom-frame purge},
C{stats} and C{warm} (C{top} is L{phantom_frame.ops.top}). Each takes a
L{ControlClient} and the output streams, and returns the exit status.
"""

from __future__ import annotations

import threading
from urllib.parse import quote
from typing import Any, Dict, List, Optional, Sequence, TextIO

from phantom_frame.config.check import size
from phantom_frame.ops.control_client import ControlClient, ControlError

__all__ = ["STATS_HEADER", "progress_bar", "purge", "ratio", "stats", "stats_table", "table", "warm"]


def _error(stderr: TextIO, message: str) -> int:
    """
    Print C{message} as the command's one-line error.

    @return: 1.
    """
    stderr.write(f"phantom-frame: {message}\n")
    return 1


def _plural(count: int, word: str, words: str = "") -> str:
    """
    @return: C{"1 word"}, or C{"N words"} (C{words}, or C{word} + C{s}).
    """
    return f"{count} {word}" if count == 1 else f"{count} {words or word + 's'}"


def _nodes(answer: Dict[str, Any]) -> str:
    """
    @return: C{", confirmed by N nodes"} (and workers) when the answer
        says how many nodes (C{nodes_confirmed}, with Redis) or workers
        (C{workers_confirmed}) confirmed the invalidation, else C{""}.
    """
    parts = []
    for key, what in (("nodes_confirmed", "node"), ("workers_confirmed", "worker")):
        count = answer.get(key)
        if isinstance(count, int) and not isinstance(count, bool):
            parts.append(_plural(count, what))
    if parts:
        return ", confirmed by " + " and ".join(parts)
    return ""


def purge(
    client: ControlClient, patterns: Sequence[str], server: Optional[str], stdout: TextIO, stderr: TextIO
) -> int:
    """
    Invalidate the entries matching each pattern: C{POST /invalidate} for
    one, C{POST /bulk_invalidate} for more.

    @param patterns: paths or globs, as the control site takes them.
    @param server: the server's name, or L{None} for every server.
    @return: 0 when every pattern was applied, 1 otherwise (the reasons
        on C{stderr}).
    """
    scope = {} if server is None else {"server": server}
    try:
        if len(patterns) == 1:
            answer = client.json("POST", "/invalidate", {"pattern": patterns[0], **scope})
            results = [{"pattern": patterns[0], "ok": True, "invalidated": answer.get("invalidated", 0)}]
        else:
            answer = client.json("POST", "/bulk_invalidate", {"patterns": list(patterns), **scope})
            results = answer.get("results", [])
    except ControlError as e:
        return _error(stderr, str(e))
    total = 0
    failed = 0
    for result in results:
        if result.get("ok"):
            count = int(result.get("invalidated", 0))
            total += count
            stdout.write(f"{result['pattern']}: dropped {_plural(count, 'entry', 'entries')}\n")
        else:
            failed += 1
            stderr.write(f"phantom-frame: {result.get('pattern')!r}: {result.get('error', 'failed')}\n")
    if len(results) > 1 or _nodes(answer):
        entries = _plural(total, "entry", "entries")
        stdout.write(f"dropped {entries} for {_plural(len(results) - failed, 'pattern')}{_nodes(answer)}\n")
    return 1 if failed else 0


def ratio(hits: float, misses: float) -> str:
    """
    @return: C{hits / (hits + misses)} as a percentage with one decimal,
        or C{"-"} when both are 0.
    """
    total = hits + misses
    return "-" if total <= 0 else f"{100.0 * hits / total:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """
    Align columns: the first to the left, the others to the right.

    @return: the lines, the header first.
    """
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(widths[0]) if i == 0 else str(cell).rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


#: The columns of L{stats_table}.
STATS_HEADER = ("SERVER", "ENTRIES", "BYTES", "HITS", "MISSES", "HIT RATIO", "STALE", "EVICTIONS")


def stats_table(servers: Dict[str, Dict[str, int]]) -> List[str]:
    """
    @param servers: the C{"servers"} of C{GET /stats}.
    @return: one line per server (and a total for more than one) under
        L{STATS_HEADER}.
    """
    names = list(servers)
    keys = ("entries", "bytes", "hits", "misses", "stale", "evictions")
    rows = []
    totals = dict.fromkeys(keys, 0)
    for name in names:
        s = {k: int(servers[name].get(k, 0)) for k in keys}
        for k in keys:
            totals[k] += s[k]
        rows.append(_stats_row(name, s))
    if len(names) > 1:
        rows.append(_stats_row("total", totals))
    return table(STATS_HEADER, rows)


def _stats_row(name: str, s: Dict[str, int]) -> List[str]:
    return [
        name,
        str(s["entries"]),
        size(s["bytes"]),
        str(s["hits"]),
        str(s["misses"]),
        ratio(s["hits"], s["misses"]),
        str(s["stale"]),
        str(s["evictions"]),
    ]


def stats(client: ControlClient, as_json: bool, stdout: TextIO, stderr: TextIO) -> int:
    """
    Show C{GET /stats}: as an aligned table, or its JSON as it came.

    @return: 0, or 1 when the control site cannot be used.
    """
    try:
        if as_json:
            stdout.write(client.request("GET", "/stats")[1].decode("utf-8"))
            return 0
        answer = client.json("GET", "/stats")
    except ControlError as e:
        return _error(stderr, str(e))
    stdout.write("\n".join(stats_table(answer.get("servers", {}))) + "\n")
    return 0


def progress_bar(done: int, total: int, failed: int, rate: float, width: int = 30) -> str:
    """
    @return: C{[#####.....]  done/total  N failed  R/s}.
    """
    filled = width if total <= 0 else min(width, width * done // total)
    bar = "#" * filled + "." * (width - filled)
    return f"[{bar}] {done}/{total}  {failed} failed  {rate:.1f}/s"


def _refresh_progress(answer: Dict[str, Any], what: str = "refreshed") -> Optional[Dict[str, float]]:
    """
    @param answer: C{GET /progress}.
    @return: the sums over the servers' runs doing C{what}, or L{None}
        when there is none.
    """
    runs = [run for run in answer.get("servers", {}).values() if run and run.get("what") == what]
    if not runs:
        return None
    return {k: sum(run[k] for run in runs) for k in ("done", "total", "failed", "rate")}


def warm(
    client: ControlClient,
    server: Optional[str],
    stdout: TextIO,
    stderr: TextIO,
    interval: float = 0.25,
) -> int:
    """
    Fetch every snapshot again (C{POST /refresh_all_snapshots}), showing a
    progress bar from C{GET /progress} meanwhile when C{stdout} is a
    terminal, then the summary and each failure.

    @param server: the server's name, or L{None} for every pre_generate
        server.
    @param interval: seconds between two looks at the progress.
    @return: 0 when every snapshot was fetched, 1 when one failed or the
        control site cannot be used.
    """
    outcome: Dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["answer"] = client.json("POST", "/refresh_all_snapshots", {} if server is None else {"server": server})
        except ControlError as e:
            outcome["error"] = e

    query = "" if server is None else "?server=" + quote(server)
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    live = getattr(stdout, "isatty", lambda: False)()
    drawn = False
    while worker.is_alive():
        worker.join(interval)
        if not live or not worker.is_alive():
            continue
        try:
            current = _refresh_progress(client.json("GET", "/progress" + query))
        except ControlError:
            current = None
        if current is not None:
            bar = progress_bar(int(current["done"]), int(current["total"]), int(current["failed"]), current["rate"])
            stdout.write("\r" + bar)
            drawn = True
    if drawn:
        stdout.write("\n")
    if "error" in outcome:
        return _error(stderr, str(outcome["error"]))
    answer = outcome["answer"]
    requested, failed = answer.get("requested", 0), answer.get("failed", 0)
    stdout.write(f"refreshed {answer.get('succeeded', 0)}/{_plural(requested, 'snapshot')}, {failed} failed\n")
    for result in answer.get("results", []):
        if not result.get("ok"):
            stdout.write(f"  {result.get('server')} {result.get('path')}: {result.get('error')}\n")
    return 1 if failed else 0
