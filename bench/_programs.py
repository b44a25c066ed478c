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

#: The origin: the page at any path, counting requests per path; paths
#: under C{/slow/} answer after C{sys.argv[2]} seconds; C{/count?path=P}
#: tells how many requests C{P} got.
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
        if path.startswith("/slow/"):
            call = reactor.callLater(SLOW, answer, request)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return NOT_DONE_YET
        return PAGE

class QuietSite(Site):
    def log(self, request):
        pass

reactor.listenTCP(int(sys.argv[1]), QuietSite(Origin()), backlog=1024, interface="127.0.0.1")
reactor.run()
'''

#: The twisted.web references: C{data} (the page as a leaf C{static.Data})
#: or C{rpr} (C{ReverseProxyResource} to the origin port C{sys.argv[3]}).
REFERENCE = PAGE_SOURCE + r'''
import sys
from twisted.internet import reactor
from twisted.web.proxy import ReverseProxyResource
from twisted.web.server import Site
from twisted.web.static import Data

class QuietSite(Site):
    def log(self, request):
        pass

class Page(Data):
    isLeaf = True

if sys.argv[2] == "data":
    root = Page(PAGE, "text/html; charset=utf-8")
else:
    root = ReverseProxyResource("127.0.0.1", int(sys.argv[3]), b"")
reactor.listenTCP(int(sys.argv[1]), QuietSite(root), interface="127.0.0.1")
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
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{origin};
            proxy_cache bench;
            proxy_cache_valid 200 10m;
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
"""
