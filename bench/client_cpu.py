"""
CPU per request of an origin client: twisted.web's Agent against
phantom-frame's pooled byte-level client.

    python bench/client_cpu.py [REQUESTS] [ROUNDS]

Starts a local twisted.web origin in a child process (a 10 KB page,
keep-alive), then, in this process, makes REQUESTS (default 20000) GET
requests with 50 in flight at a time, first with (a) C{Agent} over a
persistent C{HTTPConnectionPool} and C{readBody}, then with (b)
L{phantom_frame.proxy.pool.OriginPool} and a
L{phantom_frame.proxy.client.Collector}; ROUNDS (default 3) times,
alternating, after a warm-up that opens the connections. Prints, as a
Markdown table, the median over the rounds of this process's user and
system CPU time (C{resource.getrusage}) per request, and the ratio.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import warnings
from typing import Any, Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool, readBody  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402

from phantom_frame.proxy.client import Collector  # noqa: E402
from phantom_frame.proxy.pool import OriginPool, endpoint_factory  # noqa: E402

CONCURRENCY = 50

ORIGIN = r'''
import sys
from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import Data

page = b"<!doctype html><html><body>" + b"phantom frame " * 730 + b"</body></html>"
resource = Data(page, "text/html; charset=utf-8")
resource.isLeaf = True
site = Site(resource)
site.log = lambda request: None
port = reactor.listenTCP(0, site, interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
'''

#: What a pass-through sends: the client's end-to-end headers and ours.
HEADERS = [
    (b"User-Agent", b"bench/1.0"),
    (b"Accept", b"text/html,application/xhtml+xml"),
    (b"Accept-Language", b"en"),
    (b"X-Forwarded-For", b"127.0.0.1"),
    (b"X-Forwarded-Proto", b"http"),
    (b"X-Forwarded-Host", b"bench.example"),
]


def cpu() -> float:
    """
    @return: this process's user and system CPU seconds so far.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(fetch: Callable[[], Any], count: int) -> None:
    """
    Make C{count} requests with C{fetch}, L{CONCURRENCY} at a time.
    """
    left = [count]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await fetch()

    await defer.gatherResults(
        [defer.ensureDeferred(worker()) for _ in range(CONCURRENCY)]
    )


def agent_fetch(reactor: Any, url: bytes) -> Callable[[], Any]:
    """
    @return: a fetch through twisted.web's Agent and readBody.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = CONCURRENCY
    agent = Agent(reactor, pool=pool)
    headers = Headers()
    for name, value in HEADERS:
        headers.addRawHeader(name, value)

    async def fetch() -> None:
        response = await agent.request(b"GET", url, headers)
        body = await readBody(response)
        assert response.code == 200 and len(body) > 10000, (response.code, len(body))

    return fetch


def client_fetch(reactor: Any, url: str) -> Callable[[], Any]:
    """
    @return: a fetch through phantom-frame's origin client.
    """
    pool = OriginPool(reactor, endpoint_factory(reactor), max_idle_per_origin=CONCURRENCY)
    client = pool.client(url)
    path = url.split("/", 3)[3].encode() if url.count("/") >= 3 else b"/"

    async def fetch() -> None:
        collector = Collector()
        head = await client.request(b"GET", b"/" + path, HEADERS, collector)
        body = collector.body()
        assert head.status == 200 and len(body) > 10000, (head.status, len(body))

    return fetch


async def main(reactor: Any, count: int, rounds: int) -> None:
    """
    Run the origin, measure both clients, print the table.
    """
    origin = subprocess.Popen([sys.executable, "-c", ORIGIN], stdout=subprocess.PIPE)
    try:
        port = int(origin.stdout.readline())
        url = f"http://127.0.0.1:{port}/"
        fetches = {
            "Agent + HTTPConnectionPool + readBody": agent_fetch(reactor, url.encode()),
            "phantom-frame OriginPool": client_fetch(reactor, url),
        }
        figures: Dict[str, List[float]] = {name: [] for name in fetches}
        for fetch in fetches.values():
            await run(fetch, CONCURRENCY * 4)
        for _ in range(rounds):
            for name, fetch in fetches.items():
                before = cpu()
                await run(fetch, count)
                figures[name].append((cpu() - before) / count * 1e6)
        print(f"{count} requests x {rounds} rounds, {CONCURRENCY} in flight, 10 KB page\n")
        print("| client | CPU us / request (median) | rounds |")
        print("|---|---:|---|")
        medians = {}
        for name, values in figures.items():
            medians[name] = statistics.median(values)
            shown = ", ".join(f"{v:.0f}" for v in values)
            print(f"| {name} | {medians[name]:.1f} | {shown} |")
        agent, ours = medians.values()
        print(f"\nphantom-frame's client uses {ours / agent:.2f}x the Agent's CPU ({agent / ours:.1f}x less).")
    finally:
        origin.terminate()
        origin.wait()


if __name__ == "__main__":
    # readBody warns about the Agent's own transport; not ours to fix.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, count, rounds)))
