"""
Peak RSS growth of phantom-frame while a large body streams through it.

    python bench/stream_rss.py [SIZE_MB] [--post [--chunked]]

Starts a local origin that produces SIZE_MB (default 1024) of bytes, runs
phantom-frame (twistd) in front of it, downloads the body through the proxy
with curl, and reports the proxy's RSS before and at its peak.

With C{--post}, the body goes the other way: a client sends a SIZE_MB
C{POST} body through the proxy to an origin that reads it as it comes; the
report adds whether the origin saw the first body byte before the client
sent the last (the body streams rather than being buffered). With
C{--chunked} too, the body is sent with C{Transfer-Encoding: chunked}.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
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


#: The C{--post} origin: reads a request body with C{Content-Length},
#: noting when its first byte came (in the file C{sys.argv[2]}), and
#: answers once it is whole.
POST_ORIGIN = r'''
import sys, time
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

class Sink(Protocol):
    head = b""
    left = None
    noted = False

    def dataReceived(self, data):
        if self.left is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            for line in self.head[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.left = int(value)
            data = self.head[end + 4:]
        if data and self.left and not self.noted:
            self.noted = True
            with open(sys.argv[2], "a") as f:
                f.write("%f\n" % time.time())
        if data and self.left:
            self.left -= len(data)
            if self.left <= 0:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                self.left = None
                self.head = b""

reactor.listenTCP(int(sys.argv[1]), Factory.forProtocol(Sink), interface="127.0.0.1")
reactor.run()
'''


def post(size_mb: int, chunked: bool = False) -> None:
    """
    Send a C{size_mb} MiB POST body through the proxy and report the
    proxy's RSS growth and when the origin saw the body begin.

    @param chunked: send the body with C{Transfer-Encoding: chunked}
        rather than C{Content-Length}.
    """
    notes = os.path.join(tempfile.mkdtemp(), "first")
    # MiB: "MB" is powers of 1000, below a body of as many MiB.
    limit = f'max_request_body = "{size_mb + 1}MiB"\n'
    with origin_and_proxy(POST_ORIGIN, [notes], limit) as (proxy_port, proxy):
        before = rss_kb(proxy.pid)
        peak = [before]
        sending = threading.Event()
        sending.set()

        def watch() -> None:
            while sending.is_set():
                try:
                    peak[0] = max(peak[0], rss_kb(proxy.pid))
                except OSError:
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        size = size_mb * 1048576
        chunk = b"x" * 65536
        if chunked:
            framing, piece = b"Transfer-Encoding: chunked", b"%x\r\n%s\r\n" % (len(chunk), chunk)
        else:
            framing, piece = b"Content-Length: %d" % (size,), chunk
        started = time.time()
        sent = 0
        with socket.create_connection(("127.0.0.1", proxy_port)) as client:
            client.sendall(
                b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                + framing + b"\r\n\r\n"
            )
            try:
                for _ in range(size // len(chunk)):
                    client.sendall(piece)
                    sent += len(chunk)
                if chunked:
                    client.sendall(b"0\r\n\r\n")
            except OSError as e:
                print(f"the proxy closed the connection after {sent / 1048576:.1f} of {size_mb} MiB: {e}")
            last_sent = time.time()
            answer = b""
            try:
                while b"\r\n\r\n" not in answer:
                    data = client.recv(65536)
                    if not data:
                        break
                    answer += data
            except OSError:
                pass
        elapsed = time.time() - started
        sending.clear()
        watcher.join()
        status = answer.split(b"\r\n", 1)[0].decode("latin-1")
        try:
            with open(notes) as f:
                first_seen = float(f.readline())
        except (OSError, ValueError):
            seen = "the origin saw no body"
        else:
            seen = f"the origin saw the first body byte {last_sent - first_seen:.2f}s before the client sent the last"
        print(f"posted {sent / 1048576:.0f} MiB{' chunked' if chunked else ''} in {elapsed:.1f}s "
              f"({sent / 1048576 / elapsed:.0f} MiB/s), answer "
              f"{status!r}; proxy RSS {before / 1024:.1f} MiB -> "
              f"peak {peak[0] / 1024:.1f} MiB (growth {(peak[0] - before) / 1024:.1f} MiB); {seen}")


def main() -> None:
    flags = {a for a in sys.argv[1:] if a.startswith("--")}
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    size_mb = int(args[0]) if args else 1024
    if "--post" in flags:
        post(size_mb, "--chunked" in flags)
        return
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
