"""
A HEAD load generator, for C{bench/run.py}: C{wrk} cannot read answers to
HEAD requests (it waits for a body that never comes).

    python bench/head_load.py URL SECONDS CONNECTIONS

Each connection sends a C{HEAD} and reads the answer's head, again and
again, for SECONDS. It prints C{requests N}, C{errors N} and the latency
percentiles C{p50 MS} and C{p99 MS}, one per line.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import List
from urllib.parse import urlsplit


async def _connection(host: str, port: int, path: str, deadline: float,
                      latencies: List[float], errors: List[int]) -> None:
    request = f"HEAD {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            latencies.append(time.monotonic() - started)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        errors.append(1)
    finally:
        writer.close()


async def _main(url: str, seconds: float, connections: int) -> None:
    parts = urlsplit(url)
    latencies: List[float] = []
    errors: List[int] = []
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(
        _connection(parts.hostname, parts.port, parts.path or "/", deadline, latencies, errors)
        for _ in range(connections)
    ))
    latencies.sort()
    print(f"requests {len(latencies)}")
    print(f"errors {len(errors)}")
    for pct in (50, 99):
        value = latencies[min(len(latencies) - 1, len(latencies) * pct // 100)] if latencies else 0.0
        print(f"p{pct} {value * 1000:.3f}")


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
