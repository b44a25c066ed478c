"""
L{Progress}: how far a long run over many paths (a snapshot warm-up, a
refresh of every snapshot) has gone, logged at most once a second on the
injected clock and shown by the control site's C{GET /progress}.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["Progress"]


class Progress:
    """
    One run over C{total} items.

    @ivar server: the server's name.
    @ivar what: what the run does to each path, as logged
        (C{"pre-generated"}, C{"refreshed"}, C{"re-generated"}).
    @ivar total: how many items it takes.
    @ivar done: how many are over, failed or not.
    @ivar failed: how many of those failed.
    @ivar started: when it started, on the clock (L{None} without one).
    @ivar finished: when the last item was over, or L{None}.
    @ivar interval: seconds at least between two progress lines.
    """

    def __init__(
        self,
        server: str,
        what: str,
        total: int,
        clock: Optional[IReactorTime],
        log: Logger,
        interval: float = 1.0,
    ) -> None:
        """
        @param clock: times the run and spaces the lines; without it only
            the last line is logged.
        @param log: where the lines go.
        """
        self.server = server
        self.what = what
        self.total = total
        self.done = 0
        self.failed = 0
        self.interval = interval
        self._clock = clock
        self._log = log
        self.started = None if clock is None else clock.seconds()
        self._logged = self.started
        self.finished: Optional[float] = None
        if total == 0:
            self.finished = self.started

    @property
    def running(self) -> bool:
        """
        Whether items are left.
        """
        return self.done < self.total

    def _now(self) -> Optional[float]:
        return None if self._clock is None else self._clock.seconds()

    def elapsed(self) -> float:
        """
        @return: seconds since the start, up to the end once over (0
            without a clock).
        """
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else self._now()
        return max(0.0, (end or 0.0) - self.started)

    def rate(self) -> float:
        """
        @return: items over per second so far (0 before any time passed).
        """
        elapsed = self.elapsed()
        return self.done / elapsed if elapsed > 0 else 0.0

    def step(self, ok: bool) -> None:
        """
        Count one item as over, and log the progress when the last line is
        at least L{interval} seconds old, or when the run is over.

        @param ok: whether it succeeded.
        """
        self.done += 1
        if not ok:
            self.failed += 1
        now = self._now()
        last = self.done >= self.total
        if last:
            self.finished = now
        elif now is None or self._logged is None or now - self._logged < self.interval:
            return
        self._logged = now
        self._log.info(
            "server {server}: {what} {done}/{total} paths, {failed} failed, {rate:.1f}/s",
            server=self.server,
            what=self.what,
            done=self.done,
            total=self.total,
            failed=self.failed,
            rate=self.rate(),
        )

    def as_json(self) -> Dict[str, Any]:
        """
        @return: the run as C{GET /progress} shows it: C{what}, C{total},
            C{done}, C{failed}, C{running}, C{elapsed} and C{rate}
            (seconds and items per second, rounded).
        """
        return {
            "what": self.what,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "running": self.running,
            "elapsed": round(self.elapsed(), 3),
            "rate": round(self.rate(), 2),
        }
