"""
Memory held per cached entry beyond its body.

    python bench/entry_memory.py [COUNT]

Stores COUNT (default 100000) small entries in a ResponseCache, built the
way the proxy builds them (typical origin headers, a memory-stored body),
and reports the Python heap growth per entry minus the body bytes.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

from twisted.internet.task import Clock

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import MemoryStore

HEADERS = (
    (b"Server", b"nginx"),
    (b"Date", b"Mon, 23 Nov 2026 14:00:00 GMT"),
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"Last-Modified", b"Mon, 23 Nov 2026 13:00:00 GMT"),
    (b"ETag", b'"5f3a-1c2b"'),
    (b"Cache-Control", b"public, max-age=60"),
)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    store = MemoryStore()
    cache = ResponseCache("bench", store, Clock(), 1 << 40, 100)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    body_bytes = 0
    for i in range(count):
        key = f"GET:/products/{i}?page=1"
        body = (b"<html>%d</html>" % i) * 4
        body_bytes += len(body)
        stored = store.put(key, body).result  # already fired
        headers = tuple((n, bytes(v)) for n, v in HEADERS)  # each entry has its own copies
        cache._store(
            CacheEntry(key, 200, b"OK", headers, "identity", stored, len(body), 0.0)
        )
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_entry = (after - before - body_bytes) / count
    print(f"{count} entries: heap +{(after - before) / 1048576:.1f} MiB, bodies "
          f"{body_bytes / 1048576:.1f} MiB, {per_entry:.0f} bytes per entry beyond the body "
          f"(headers {sum(len(n) + len(v) for n, v in HEADERS)} bytes of them)")


if __name__ == "__main__":
    main()
