"""
The cycle collector's settings for a proxy process.

A proxy makes and drops many short-lived objects per request (its
Deferreds, views, heads) and holds many long-lived ones (cached entries,
the code and configuration loaded at start). With CPython's default
thresholds (700, 10, 10) the young generation is collected every 700
allocations, promoting the objects of requests still in flight, and the
full collections that follow keep walking everything loaded at start. A
fill-heavy process spent about a tenth of its CPU time so. L{tune_collector}
collects the young generation every 10,000 allocations instead (a few MiB
at most between two collections) and, once the reactor runs, moves what
start-up made into the permanent generation (C{gc.freeze}), which no
collection walks again. Set C{PHANTOM_FRAME_GC_TUNING=0} to keep Python's
defaults.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Tuple

#: Whether L{tune_collector} changes anything.
ENABLED = os.environ.get("PHANTOM_FRAME_GC_TUNING", "1") != "0"

#: The collector's thresholds in a proxy process.
THRESHOLDS: Tuple[int, int, int] = (10_000, 10, 10)


def tune_collector(reactor: Any, enabled: bool = ENABLED) -> bool:
    """
    Give the cycle collector a proxy's thresholds (L{THRESHOLDS}) now, and
    freeze what start-up made once C{reactor} runs.

    @param reactor: an L{twisted.internet.interfaces.IReactorCore}.
    @param enabled: whether to change anything (see L{ENABLED}).
    @return: whether anything was changed (never on PyPy).
    """
    if not enabled or not hasattr(gc, "set_threshold"):
        return False  # (PyPy's collector is another, without these knobs)
    gc.set_threshold(*THRESHOLDS)
    reactor.callWhenRunning(gc.freeze)
    return True
