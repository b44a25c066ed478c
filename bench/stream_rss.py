"""
Peak RSS growth of phantom-frame while a large body streams through it.

    python bench/stream_rss.py [SIZE_MB]

Starts a local origin that produces SIZE_MB (default 1024) of bytes, runs
phantom-frame (twistd) in front of it, downloads the body through the proxy
with curl, and reports the proxy's RSS before and at its peak.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port: int) -> None:
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def main() -> None:
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    origin_port, proxy_port, control_port = free_port(), free_port(), free_port()
    tmp = tempfile.mkdtemp()
    config = os.path.join(tmp, "config.toml")
    with open(config, "w") as f:
        f.write(
            f'http_port = {proxy_port}\ncontrol_port = {control_port}\nbind_address = "127.0.0.1"\n'
            f'access_log = false\n[server.big]\nproxy_url = "http://127.0.0.1:{origin_port}"\n'
        )
    origin = subprocess.Popen([sys.executable, "-c", ORIGIN, str(origin_port), str(size_mb)])
    proxy = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "phantom-frame", "--config", config],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(origin_port)
        wait_port(proxy_port)
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
    finally:
        proxy.terminate()
        origin.terminate()
        proxy.wait()
        origin.wait()


if __name__ == "__main__":
    main()
