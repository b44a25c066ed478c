"""
Tests for L{phantom_frame.ops.console} and L{phantom_frame.ops.top}: what
the control commands print, over a scripted control site.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.ops import console, top
from phantom_frame.ops.control_client import ControlAddress, ControlError


class Scripted:
    """
    A control site's client whose answers the test gives: C{routes} maps
    C{(method, path)} to the answer, or to a function of the body giving
    it; an exception is raised.
    """

    def __init__(self, routes: Dict[Tuple[str, str], Any]) -> None:
        self.address = ControlAddress("127.0.0.1", 17809)
        self.routes = routes
        self.calls: List[Tuple[str, str, Any]] = []

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """
        @return: the scripted answer.
        """
        self.calls.append((method, path, body))
        answer = self.routes[(method, path)]
        if callable(answer):
            answer = answer(body)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def text(self, path: str) -> str:
        """
        @return: the scripted text of C{GET path}.
        """
        return self.json("GET", path)

    def request(self, method: str, path: str, body: Any = None) -> Tuple[int, bytes]:
        """
        @return: 200 and the scripted answer's bytes.
        """
        return 200, str(self.json(method, path, body)).encode()


class Terminal(io.StringIO):
    """
    Text written to a terminal.
    """

    def isatty(self) -> bool:
        """
        @return: True.
        """
        return True


class PurgeTests(SynchronousTestCase):
    """
    L{console.purge}.
    """

    def test_bulk(self) -> None:
        """
        Several patterns go in one bulk call; each result is a line, a
        refused pattern an error and status 1, then the total with the
        nodes that confirmed when the answer says so.
        """
        client = Scripted(
            {
                ("POST", "/bulk_invalidate"): {
                    "requested": 3,
                    "nodes_confirmed": 3,
                    "workers_confirmed": 2,
                    "results": [
                        {"pattern": "/a", "ok": True, "invalidated": 2},
                        {"pattern": "[", "ok": False, "error": "unbalanced bracket"},
                        {"pattern": "/b/*", "ok": True, "invalidated": 1},
                    ],
                }
            }
        )
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(console.purge(client, ["/a", "[", "/b/*"], "api", out, err), 1)
        self.assertEqual(client.calls, [("POST", "/bulk_invalidate", {"patterns": ["/a", "[", "/b/*"], "server": "api"})])
        self.assertEqual(
            out.getvalue().splitlines(),
            ["/a: dropped 2 entries", "/b/*: dropped 1 entry", "dropped 3 entries for 2 patterns, confirmed by 3 nodes and 2 workers"],
        )
        self.assertEqual(err.getvalue(), "phantom-frame: '[': unbalanced bracket\n")

    def test_refused(self) -> None:
        """
        A control site that refuses is one line and status 1.
        """
        client = Scripted({("POST", "/invalidate"): ControlError("the control site at x answered 500")})
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(console.purge(client, ["/a"], None, out, err), 1)
        self.assertEqual((out.getvalue(), err.getvalue()), ("", "phantom-frame: the control site at x answered 500\n"))


class StatsTests(SynchronousTestCase):
    """
    L{console.stats_table}.
    """

    def test_table(self) -> None:
        """
        One aligned row per server with its hit ratio and a human size, and
        a total row for more than one server.
        """
        lines = console.stats_table(
            {
                "site": {"entries": 12, "bytes": 3 * 1024 * 1024, "hits": 90, "misses": 10, "stale": 1, "evictions": 0},
                "api": {"entries": 0, "bytes": 0, "hits": 0, "misses": 0, "stale": 0, "evictions": 4},
            }
        )
        self.assertEqual(
            lines,
            [
                "SERVER  ENTRIES  BYTES  HITS  MISSES  HIT RATIO  STALE  EVICTIONS",
                "site         12  3 MiB    90      10      90.0%      1          0",
                "api           0    0 B     0       0          -      0          4",
                "total        12  3 MiB    90      10      90.0%      1          4",
            ],
        )


class WarmTests(SynchronousTestCase):
    """
    L{console.warm}.
    """

    def test_progressBar(self) -> None:
        """
        On a terminal, a bar drawn from C{/progress} while the refresh runs,
        then the summary and the failures; status 1 when one failed.
        """
        polls: List[int] = []
        enough = threading.Event()

        def progress(body: Any) -> Any:
            polls.append(1)
            if len(polls) >= 2:
                enough.set()
            return {"servers": {"docs": {"what": "refreshed", "done": 2, "total": 4, "failed": 1, "rate": 8.0}}}

        def refresh(body: Any) -> Any:
            self.assertTrue(enough.wait(10))
            return {
                "requested": 4,
                "succeeded": 3,
                "failed": 1,
                "results": [{"server": "docs", "path": "/x", "ok": False, "error": "origin answered 500"}],
            }

        client = Scripted({("POST", "/refresh_all_snapshots"): refresh, ("GET", "/progress?server=docs"): progress})
        out, err = Terminal(), io.StringIO()
        self.assertEqual(console.warm(client, "docs", out, err, interval=0.001), 1)
        text = out.getvalue()
        self.assertIn("\r[" + "#" * 15 + "." * 15 + "] 2/4  1 failed  8.0/s", text)
        self.assertTrue(
            text.endswith("\nrefreshed 3/4 snapshots, 1 failed\n  docs /x: origin answered 500\n"), text
        )
        self.assertEqual(client.calls[0], ("POST", "/refresh_all_snapshots", {"server": "docs"}))

    def test_notTerminal(self) -> None:
        """
        Elsewhere, only the summary; status 0 when every snapshot was
        fetched.
        """
        client = Scripted({("POST", "/refresh_all_snapshots"): {"requested": 2, "succeeded": 2, "failed": 0, "results": []}})
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(console.warm(client, None, out, err, interval=0.001), 0)
        self.assertEqual(out.getvalue(), "refreshed 2/2 snapshots, 0 failed\n")
        self.assertEqual([c[:2] for c in client.calls], [("POST", "/refresh_all_snapshots")])


METRICS = """\
# TYPE phantom_frame_requests_total counter
phantom_frame_requests_total{{server="site",method="get_head",status="2xx",cache="hit"}} {hits}
phantom_frame_requests_total{{server="site",method="get_head",status="5xx",cache="miss"}} {errors}
# TYPE phantom_frame_response_bytes_total counter
phantom_frame_response_bytes_total{{server="site",cache="hit"}} {sent}
# TYPE phantom_frame_upstream_request_duration_seconds histogram
phantom_frame_upstream_request_duration_seconds_bucket{{server="site",le="+Inf"}} {upstream}
phantom_frame_upstream_request_duration_seconds_count{{server="site"}} {upstream}
phantom_frame_upstream_request_duration_seconds_sum{{server="site"}} {seconds}
"""


class Site:
    """
    A proxy whose counters grow by a fixed amount at each sample.
    """

    def __init__(self) -> None:
        self.samples = 0

    def client(self) -> Scripted:
        """
        @return: a client of this proxy.
        """
        def stats(body: Any) -> Any:
            self.samples += 1
            n = self.samples
            return {"servers": {"site": {"entries": 5, "bytes": 2048, "hits": 8 * n, "misses": 2 * n}}}

        def metrics(body: Any) -> str:
            n = self.samples
            return METRICS.format(hits=10 * n, errors=n, sent=4096 * n, upstream=2 * n, seconds=0.05 * n)

        def keys(body: Any) -> Any:
            n = self.samples
            return {"servers": {"site": {"hits": 8 * n, "keys": [{"key": "GET:/hot", "hits": 6 * n, "error": 0}]}}}

        return Scripted({("GET", "/stats"): stats, ("GET", "/metrics"): metrics, ("GET", "/top_keys?n=5"): keys})


class TopTests(SynchronousTestCase):
    """
    L{top.top}: rates between two samples, frames until interrupted.
    """

    def clocked(self, stop_after: Optional[int] = None) -> Tuple[Callable[[], float], Callable[[float], None]]:
        """
        @return: a clock and a sleep that advances it (raising
            L{KeyboardInterrupt} on sleep number C{stop_after}).
        """
        now = [100.0]
        sleeps: List[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if stop_after is not None and len(sleeps) >= stop_after:
                raise KeyboardInterrupt()
            now[0] += seconds

        return (lambda: now[0]), sleep

    def test_once(self) -> None:
        """
        One frame from two samples a second apart: requests, errors and
        bytes per second, the hit ratio then and overall, the stored size,
        the mean upstream latency, and the busiest keys with their rate.
        """
        clock, sleep = self.clocked()
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(top.top(Site().client(), out, err, once=True, interval=2.0, keys=5, sleep=sleep, clock=clock), 0)
        lines = out.getvalue().splitlines()
        self.assertTrue(lines[0].startswith("phantom-frame top  127.0.0.1:17809  every 2s  "), lines[0])
        self.assertEqual(lines[2].split()[:2], ["SERVER", "REQ/S"])
        self.assertEqual(lines[3].split(), ["site", "5.5", "80.0%", "80.0%", "2", "KiB/s", "2", "KiB", "5", "25.0", "ms", "0.5"])
        keys = lines[lines.index("Busiest keys:") + 2].split()
        self.assertEqual(keys, ["site", "GET:/hot", "12", "3.0/s"])
        self.assertNotIn(top.CLEAR, out.getvalue())

    def test_live(self) -> None:
        """
        On a terminal, frames clear the screen, until Ctrl-C ends the view
        with status 0.
        """
        clock, sleep = self.clocked(stop_after=3)
        out = Terminal()
        self.assertEqual(top.top(Site().client(), out, io.StringIO(), keys=5, sleep=sleep, clock=clock), 0)
        self.assertEqual(out.getvalue().count(top.CLEAR), 2)

    def test_unreachable(self) -> None:
        """
        A control site that cannot be used at first is one line, status 1.
        """
        client = Scripted({("GET", "/stats"): ControlError("cannot reach the control site at x: connection refused")})
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(top.top(client, out, err, once=True, sleep=lambda s: None), 1)
        self.assertEqual(err.getvalue(), "phantom-frame: cannot reach the control site at x: connection refused\n")
