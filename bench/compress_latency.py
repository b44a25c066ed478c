"""
Hit latency with and without large Brotli compressions going on.

    python bench/compress_latency.py

Runs an origin and phantom-frame, warms a 10 KB page into the cache, then
measures hits on it with wrk twice: alone, and while another client keeps
fetching new 5 MB pages (each one a cache fill compressed with Brotli on the
proxy's thread pool). Prints wrk's latency percentiles for both runs.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import urllib.request

from _harness import origin_and_proxy

ORIGIN = r'''
import sys, random
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site
words = [b"phantom", b"frame", b"twisted", b"cache", b"proxy", b"brotli", b"reactor", b"deferred"]
rng = random.Random(1)
LARGE = b" ".join(rng.choice(words) + b"%d" % rng.randrange(1000) for _ in range(700000))[: 5 * 1024 * 1024]
PAGE = b"<html>" + b"hello world " * 850 + b"</html>"
class R(Resource):
    isLeaf = True
    def render(self, request):
        request.setHeader(b"content-type", b"text/html")
        return LARGE if request.path.startswith(b"/large") else PAGE
reactor.listenTCP(int(sys.argv[1]), Site(R()), interface="127.0.0.1")
reactor.run()
'''


def wrk(url: str, seconds: int = 5) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", "-c10", f"-d{seconds}s", "--latency", "-H", "Accept-Encoding: br", url],
        capture_output=True, text=True, check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "90", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        value = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        result[f"p{pct}"] = value
    return result


def main() -> None:
    stop = threading.Event()
    fills = []

    def fill_loop() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            started = time.time()
            req = urllib.request.Request(f"http://127.0.0.1:{proxy_port}/large?{i}",
                                         headers={"Accept-Encoding": "br"})
            urllib.request.urlopen(req).read()
            fills.append(time.time() - started)

    with origin_and_proxy(ORIGIN) as (proxy_port, _):
        url = f"http://127.0.0.1:{proxy_port}/page"
        urllib.request.urlopen(url).read()
        wrk(url, 2)
        alone = wrk(url)
        worker = threading.Thread(target=fill_loop)
        worker.start()
        time.sleep(0.5)
        busy = wrk(url)
        stop.set()
        worker.join()
        print("| hits on a 10 KB page (wrk -c10) | req/s | p50 ms | p90 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|")
        for name, r in (("alone", alone), ("during 5 MB Brotli fills", busy)):
            print(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} |")
        print(f"{len(fills)} fills of 5 MB during the run, median {sorted(fills)[len(fills)//2]*1000:.0f} ms each; "
              f"p99 ratio {busy['p99'] / alone['p99']:.2f}")


if __name__ == "__main__":
    main()
