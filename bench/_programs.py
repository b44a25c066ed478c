"""
The programs and configurations that C{bench/run.py} starts: the origin, the
twisted.web references, nginx and phantom-frame.
"""

#: Builds C{PAGE}, the 10 KB HTML page every server answers, in each child.
PAGE_SOURCE = r'''
import random as _random

def _page(size=10240):
    rng = _random.Random(7)
    words = ("phantom frame twisted cache proxy brotli reactor deferred resource "
             "channel request response header body origin client server stream").split()
    head = b"<!doctype html><html><head><meta charset=utf-8><title>bench</title></head><body>\n"
    tail = b"</body></html>\n"
    parts, used = [head], len(head) + len(tail)
    while True:
        text = " ".join(rng.choice(words) + str(rng.randrange(1000)) for _ in range(12))
        para = b"<p>" + text.encode() + b"</p>\n"
        if used + len(para) > size - 8:
            break
        parts.append(para)
        used += len(para)
    parts.append(b"<!--" + b" " * (size - used - 7) + b"-->")
    parts.append(tail)
    return b"".join(parts)

PAGE = _page()
assert len(PAGE) == 10240, len(PAGE)
'''

#: The origin: the page at any path (with an C{ETag}), counting requests per
#: path; paths under C{/slow/} answer after C{sys.argv[2]} seconds, paths
#: under C{/next/} carry Next.js's C{Vary}; a POST is read whole and answered
#: with a short body; C{/count?path=P} tells how many requests C{P} got.
ORIGIN = PAGE_SOURCE + r'''
import sys
from collections import Counter
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

SLOW = float(sys.argv[2])
counts = Counter()

def answer(request):
    request.write(PAGE)
    request.finish()

class Origin(Resource):
    isLeaf = True

    def render_GET(self, request):
        path = request.path.decode("latin-1")
        if path == "/count":
            return b"%d" % counts[request.args.get(b"path", [b""])[0].decode("latin-1")]
        counts[path] += 1
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"etag", b'"bench"')
        if path.startswith("/next/"):
            request.setHeader(b"vary", NEXT_VARY)
        if path.startswith("/slow/"):
            call = reactor.callLater(SLOW, answer, request)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return NOT_DONE_YET
        return PAGE

    def render_POST(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"%d bytes\n" % len(request.content.read())

NEXT_VARY = (b"rsc, next-router-state-tree, next-router-prefetch, "
             b"next-router-segment-prefetch, Accept-Encoding")

class QuietSite(Site):
    def log(self, request):
        pass

reactor.listenTCP(int(sys.argv[1]), QuietSite(Origin()), backlog=1024, interface="127.0.0.1")
reactor.run()
'''

#: The twisted.web references: C{data} (the page as a leaf C{static.Data}),
#: C{rpr} (C{ReverseProxyResource} to the origin port C{sys.argv[3]}) or
#: C{ceiling} (a raw Twisted C{Protocol} writing a canned answer for every
#: request head: what a Twisted server cannot beat).
REFERENCE = PAGE_SOURCE + r'''
import sys
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.web.proxy import ReverseProxyResource
from twisted.web.server import Site
from twisted.web.static import Data

CANNED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
          b"Content-Length: %d\r\n\r\n" % len(PAGE)) + PAGE

class Canned(Protocol):
    buffer = b""

    def dataReceived(self, data):
        data = self.buffer + data
        heads = data.count(b"\r\n\r\n")
        self.buffer = data[data.rfind(b"\r\n\r\n") + 4:] if heads else data
        if heads:
            self.transport.write(CANNED * heads)

class QuietSite(Site):
    def log(self, request):
        pass

class Page(Data):
    isLeaf = True

if sys.argv[2] == "ceiling":
    factory = Factory.forProtocol(Canned)
elif sys.argv[2] == "data":
    factory = QuietSite(Page(PAGE, "text/html; charset=utf-8"))
else:
    factory = QuietSite(ReverseProxyResource("127.0.0.1", int(sys.argv[3]), b""))
reactor.listenTCP(int(sys.argv[1]), factory, backlog=1024, interface="127.0.0.1")
reactor.run()
'''

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=bench:10m;
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{origin};
            proxy_cache bench;
            proxy_cache_valid 200 10m;
        }}
        location /pass/ {{
            proxy_pass http://origin/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

PROXY_CONF = """\
http_listen = "tcp:{port}:interface=127.0.0.1:backlog=1024"
control_port = {control}
access_log = false

[server.site]
bind_to = "*"
proxy_url = "http://127.0.0.1:{origin}"
compress_strategy = "brotli"

[server.pass]
bind_to = "/pass"
proxy_url = "http://127.0.0.1:{origin}"
cache_strategy = "none"

# The fills have servers of their own, whose bounded caches keep them from
# evicting the pages the hits ask for.
[server.fill]
bind_to = "/fill"
proxy_url = "http://127.0.0.1:{origin}"
compress_strategy = "brotli"
cache_max_bytes = "64 MiB"

[server.plain]
bind_to = "/plain"
proxy_url = "http://127.0.0.1:{origin}"
compress_strategy = "none"
cache_max_bytes = "64 MiB"
"""
