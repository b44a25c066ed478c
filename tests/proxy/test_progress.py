"""
Tests for L{phantom_frame.proxy.progress} and the progress of
L{phantom_frame.proxy.snapshots.Snapshots.fetch_all}: lines at most once a
second on the injected clock, and always at the end.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.proxy.progress import Progress
from phantom_frame.proxy.snapshots import SnapshotError, Snapshots


class Events:
    """
    A log observer keeping the formatted messages.
    """

    def __init__(self) -> None:
        self.lines: List[str] = []

    def __call__(self, event: Dict[str, Any]) -> None:
        """
        Keep the event's message.
        """
        self.lines.append(formatEvent(event))


def progress_lines(events: Events) -> List[str]:
    """
    @return: the progress lines among C{events}.
    """
    return [line for line in events.lines if " paths, " in line]


class ProgressTests(SynchronousTestCase):
    """
    L{Progress} counts, times and logs a run.
    """

    def setUp(self) -> None:
        """
        A clock, and a logger keeping its events.
        """
        self.clock = Clock()
        self.events = Events()
        self.log = Logger(observer=self.events)

    def test_atMostOncePerSecond(self) -> None:
        """
        Many steps within a second log nothing until a second has passed
        since the start (or the last line); the last step always logs, with
        done/total, failures and the rate.
        """
        progress = Progress("ssg", "refreshed", 5, self.clock, self.log)
        progress.step(True)
        self.clock.advance(0.5)
        progress.step(False)
        self.assertEqual(self.events.lines, [])
        self.clock.advance(0.5)
        progress.step(True)
        self.assertEqual(self.events.lines, ["server ssg: refreshed 3/5 paths, 1 failed, 3.0/s"])
        self.clock.advance(0.2)
        progress.step(True)
        self.assertEqual(len(self.events.lines), 1)
        self.clock.advance(0.8)
        progress.step(True)
        self.assertEqual(self.events.lines[-1], "server ssg: refreshed 5/5 paths, 1 failed, 2.5/s")
        self.assertFalse(progress.running)
        self.clock.advance(10)
        self.assertEqual(
            progress.as_json(),
            {"what": "refreshed", "total": 5, "done": 5, "failed": 1, "running": False, "elapsed": 2.0, "rate": 2.5},
        )

    def test_withoutClock(self) -> None:
        """
        Without a clock only the last line is logged.
        """
        progress = Progress("ssg", "pre-generated", 3, None, self.log)
        for _ in range(3):
            progress.step(True)
        self.assertEqual(self.events.lines, ["server ssg: pre-generated 3/3 paths, 0 failed, 0.0/s"])

    def test_running(self) -> None:
        """
        A run in progress says so, with the time so far.
        """
        progress = Progress("ssg", "refreshed", 2, self.clock, self.log)
        self.clock.advance(4)
        progress.step(True)
        self.assertEqual(progress.as_json()["running"], True)
        self.assertEqual((progress.elapsed(), progress.rate()), (4.0, 0.25))


class Filler:
    """
    Fetches snapshots when told: each fetch is a L{Deferred} left to the
    test.
    """

    def __init__(self) -> None:
        self.fetches: Dict[bytes, Deferred] = {}

    def fetch_snapshot(self, key: str, target: bytes, semaphore: Any) -> Deferred:
        """
        @return: a L{Deferred} the test fires.
        """
        d: Deferred = Deferred()
        self.fetches[target] = d
        return d


class FetchAllTests(SynchronousTestCase):
    """
    L{Snapshots.fetch_all} logs its progress by time, not by count, and
    keeps the run as L{Snapshots.progress}.
    """

    def test_timeBased(self) -> None:
        """
        Two hundred fetches finishing within a second make one progress
        line (the last); spread over three seconds, one per second.
        """
        clock = Clock()
        events = Events()
        from phantom_frame.proxy import snapshots as module

        self.patch(module, "log", Logger(observer=events))
        filler = Filler()
        paths = [f"/p/{n}" for n in range(200)]
        snapshots = Snapshots("ssg", paths, 4, filler, None, lambda target: target.decode(), clock=clock)
        done = snapshots.fetch_all(what="refreshed")
        for n, path in enumerate(paths[:100]):
            filler.fetches[path.encode()].callback(None)
        self.assertEqual(progress_lines(events), [])
        self.assertEqual(snapshots.progress.as_json()["done"], 100)
        for second in range(3):
            clock.advance(1)
            for path in paths[100 + second * 30 : 130 + second * 30]:
                filler.fetches[path.encode()].callback(None)
        self.assertEqual(len(progress_lines(events)), 3)
        for path in paths[190:199]:
            filler.fetches[path.encode()].callback(None)
        filler.fetches[paths[199].encode()].errback(Failure(SnapshotError("origin answered 500")))
        lines = progress_lines(events)
        self.assertEqual(lines[-1], "server ssg: refreshed 200/200 paths, 1 failed, 66.7/s")
        self.assertEqual(len(lines), 4)
        self.assertIn("server ssg: snapshot /p/199 failed: origin answered 500", events.lines)
        results = self.successResultOf(done)
        self.assertEqual(results["/p/199"], "origin answered 500")
        self.assertFalse(snapshots.progress.running)
