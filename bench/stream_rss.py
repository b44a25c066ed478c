"""
Peak RSS growth of phantom-frame while a large body streams through it.

    python bench/stream_rss.py [SIZE_MB]

Starts a local origin that produces SIZE_MB (default 1024) of bytes, runs
phantom-frame (twistd) in front of it, downloads the body through the proxy
with curl, and reports the proxy's RSS before and at its peak.
"""

from __future__ import annotations

import subprocess
import sys
import time

from _harness import origin_and_proxy, rss_kb

ORIGIN = r'''
import sys
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site, NOT_DONE_YET
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

CHUNK = b"x" * 65536

@implementer(IPushProducer)
class Body:
    def __init__(self, request, total):
        self.request, self.left, self.paused = request, total, False
        request.registerProducer(self, True)
        reactor.callLater(0, self.go)
    def go(self):
        while not self.paused and self.left > 0:
            n = min(len(CHUNK), self.left); self.left -= n
            self.request.write(CHUNK[:n])
        if self.left <= 0:
            self.request.unregisterProducer(); self.request.finish(); self.left = -1
    def pauseProducing(self): self.paused = True
    def resumeProducing(self):
        if self.paused:
            self.paused = False; reactor.callLater(0, self.go)
    def stopProducing(self): self.left = -1

class Big(Resource):
    isLeaf = True
    def render(self, request):
        total = int(sys.argv[2]) * 1024 * 1024
        request.setHeader(b"content-type", b"application/octet-stream")
        Body(request, total)
        return NOT_DONE_YET

reactor.listenTCP(int(sys.argv[1]), Site(Big()), interface="127.0.0.1")
reactor.run()
'''


def main() -> None:
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    with origin_and_proxy(ORIGIN, [str(size_mb)]) as (proxy_port, proxy):
        before = rss_kb(proxy.pid)
        peak = before
        started = time.time()
        curl = subprocess.Popen(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
             f"http://127.0.0.1:{proxy_port}/big"],
            stdout=subprocess.PIPE,
        )
        while curl.poll() is None:
            peak = max(peak, rss_kb(proxy.pid))
            time.sleep(0.05)
        elapsed = time.time() - started
        size = int(curl.stdout.read() or 0)
        print(f"streamed {size / 1048576:.0f} MiB in {elapsed:.1f}s "
              f"({size / 1048576 / elapsed:.0f} MiB/s); proxy RSS {before / 1024:.1f} MiB -> "
              f"peak {peak / 1024:.1f} MiB (growth {(peak - before) / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
