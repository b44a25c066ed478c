"""
End-to-end tests of the proxy on loopback: a real origin, the proxy in a
real L{Site}, and a real client.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame import CreateProxyConfig
from phantom_frame.cache.codec import brotli
from phantom_frame.config.loader import parse_config

from tests.memory import Proxy
from tests.origin import PAGE, Origin, Running, gather, header, stalled, until


class RawClient(Protocol):
    """
    Sends raw bytes, collects everything until the connection closes.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = []
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason) -> None:
        self.closed.callback(b"".join(self.received))


async def raw_exchange(port: int, data: bytes) -> bytes:
    """
    @return: all the proxy answered to C{data} on a fresh connection.
    """
    client = RawClient(data)
    factory = ClientFactory.forProtocol(lambda: client)
    reactor.connectTCP("127.0.0.1", port, factory)
    timeout = reactor.callLater(10, lambda: client.transport.abortConnection())
    try:
        return await client.closed
    finally:
        if timeout.active():
            timeout.cancel()


def wait(seconds: float) -> Deferred:
    """
    @return: a L{Deferred} firing after C{seconds} of real time.
    """
    return deferLater(reactor, seconds, lambda: None)


class PassThroughTests(TestCase):
    """
    Requests that are not cached travel to the origin and back intact.
    """

    async def test_get_with_query_and_forwarded_headers(self) -> None:
        """
        A GET reaches the origin with its query, the origin's host as
        C{Host}, and C{X-Forwarded-For/-Proto/-Host}; an existing
        C{X-Forwarded-For} is appended to.
        """
        run = Running(self)
        response, body = await run.fetch(
            "GET", "/echo?x=1&y=%20z", headers={"X-Forwarded-For": "10.9.8.7"}
        )
        self.assertEqual(response.code, 200)
        echoed = json.loads(body)
        self.assertEqual(echoed["uri"], "/echo?x=1&y=%20z")
        headers = echoed["headers"]
        self.assertEqual(headers["host"], ["127.0.0.1:%d" % run.originPort.getHost().port])
        self.assertEqual(headers["x-forwarded-for"], ["10.9.8.7, 127.0.0.1"])
        self.assertEqual(headers["x-forwarded-proto"], ["http"])
        self.assertEqual(headers["x-forwarded-host"], ["127.0.0.1:%d" % run.port.getHost().port])

    async def test_methods_and_bodies(self) -> None:
        """
        POST, PUT, PATCH and DELETE are forwarded with their bodies, byte for
        byte, and never cached.
        """
        run = Running(self)
        payload = bytes(range(256)) * 1000  # 256 KB: spooled and streamed
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response, body = await run.fetch(method, "/echo/m", data=payload)
            echoed = json.loads(body)
            self.assertEqual(echoed["method"], method)
            self.assertEqual(echoed["length"], len(payload))
            self.assertEqual(echoed["sha256"], hashlib.sha256(payload).hexdigest())
            self.assertIn("fwd=bypass", header(response, "cache-status"))

    async def test_repeated_set_cookie_kept(self) -> None:
        """
        Two C{Set-Cookie} headers from the origin both reach the client.
        """
        run = Running(self)
        response, _ = await run.fetch("GET", "/cookie")
        self.assertEqual(response.headers.getRawHeaders(b"set-cookie"), [b"a=1", b"b=2"])

    async def test_hop_by_hop_dropped(self) -> None:
        """
        Hop-by-hop headers, and those the C{Connection} header names, are
        not forwarded.
        """
        run = Running(self)
        answer = await raw_exchange(
            run.port.getHost().port,
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: X-Secret, close\r\n"
            b"X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
            b"Proxy-Authorization: Basic eA==\r\nX-Kept: yes\r\n\r\n",
        )
        headers = run.origin.requests[-1]["headers"]
        for name in ("x-secret", "keep-alive", "te", "proxy-authorization"):
            self.assertNotIn(name, headers)
        self.assertEqual(headers["x-kept"], ["yes"])
        self.assertIn(b"200 OK", answer.split(b"\r\n", 1)[0])

    async def test_redirect_relayed(self) -> None:
        """
        An upstream redirect is relayed to the client, not followed.
        """
        run = Running(self)
        response, _ = await run.fetch("GET", "/redirect")
        self.assertEqual(response.code, 302)
        self.assertEqual(header(response, "location"), "/page/target")
        self.assertEqual(run.origin.hits["/page/target"], 0)

    async def test_origin_refused_is_502(self) -> None:
        """
        An origin that refuses connections gives a short 502.
        """
        run = Running(self)
        port = run.originPort.getHost().port
        await run.originPort.stopListening()
        with capturedLogs() as events:
            response, body = await run.fetch("GET", "/page/x")
        self.assertEqual(response.code, 502)
        self.assertEqual(body, b"Bad Gateway\n")
        self.assertNotIn(b"Traceback", body)
        [warning] = [e for e in events if e.get("log_namespace") == "phantom_frame.proxy"]
        self.assertEqual(warning["origin"], "http://127.0.0.1:%d" % (port,))
        self.assertIn("refused", warning["error"].lower())

    async def test_slow_origin_is_504(self) -> None:
        """
        An origin that does not answer within C{upstream_timeout} gives 504.
        """
        run = Running(self, CreateProxyConfig().with_upstream_timeout(0.2))
        response, body = await run.fetch("GET", "/slow")
        self.assertEqual(response.code, 504)
        self.assertEqual(body, b"Gateway Timeout\n")

    async def test_forward_get_only(self) -> None:
        """
        With C{forward_get_only}, other methods get 405 with C{Allow} and
        never reach the origin.
        """
        run = Running(self, CreateProxyConfig().with_forward_get_only(True))
        response, _ = await run.fetch("POST", "/echo", data=b"x")
        self.assertEqual(response.code, 405)
        self.assertEqual(header(response, "allow"), "GET, HEAD")
        self.assertEqual(run.origin.hits["/echo"], 0)

    async def test_malformed_target_is_400(self) -> None:
        """
        A request target that is neither origin-form nor absolute-form gets
        400; absolute-form is accepted.
        """
        run = Running(self)
        answer = await raw_exchange(
            run.port.getHost().port, b"GET nonsense HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 400"), answer[:40])
        answer = await raw_exchange(
            run.port.getHost().port,
            b"GET http://example.test/echo?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:40])
        self.assertEqual(run.origin.requests[-1]["uri"], "/echo?a=1")

    async def test_large_body_back_pressure(self) -> None:
        """
        A large uncached body streams with back-pressure: while the client
        does not read, the origin is paused and the proxy holds only a
        bounded amount; once the client reads, every byte arrives.
        """
        run = Running(self)
        total = 64 * 1024 * 1024
        received = []
        done: Deferred = Deferred()

        class Slow(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(
                    b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % total
                )
                self.transport.pauseProducing()

            def dataReceived(self, data: bytes) -> None:
                received.append(len(data))

            def connectionLost(self, reason) -> None:
                done.callback(None)

        client = Slow()
        reactor.connectTCP("127.0.0.1", run.port.getHost().port, ClientFactory.forProtocol(lambda: client))
        await until(lambda: run.origin.streams)
        stream = run.origin.streams[0]
        upstream = stream.request.getClientAddress()
        await until(lambda: stream.paused and stalled(upstream, client.transport.getHost()))
        self.assertLess(stream.sent, 16 * 1024 * 1024)
        client.transport.resumeProducing()
        await done
        self.assertGreater(sum(received), total)
        self.assertEqual(stream.sent, total)


class ClientGoneTests(SynchronousTestCase):
    """
    A client that goes away, in memory on a fake clock.
    """

    def test_client_disconnect_cancels_upstream(self) -> None:
        """
        When the client goes away while the origin is thinking, the upstream
        request is cancelled (the origin sees its connection close), and
        nothing is logged as an origin failure, then or later.
        """
        origin = Origin()
        proxy = Proxy(self, parse_config({"server": {"site": {"proxy_url": "http://origin.example"}}}), origin)
        with capturedLogs() as events:
            request = proxy.client.request("POST", "http://proxy.example/slow", data=b"")
            proxy.settle()
            [pending] = origin.pending
            lost = pending.notifyFinish()
            request.cancel()
            proxy.settle()
            self.failureResultOf(lost, ConnectionDone, ConnectionLost)
            proxy.clock.advance(120)
            proxy.settle()
        # The client's own cancellation.
        self.failureResultOf(request)
        warnings = [e for e in events if e["log_level"] in (LogLevel.warn, LogLevel.error, LogLevel.critical)]
        self.assertEqual(warnings, [], "a client leaving is not an origin failure")


class CacheTests(TestCase):
    """
    Cacheable requests are answered from the cache after one fill.
    """

    async def test_hit_after_miss(self) -> None:
        """
        The second GET is a hit: the origin is asked once, and
        C{Cache-Status} says stored, then hit.
        """
        run = Running(self)
        first, body1 = await run.fetch("GET", "/page/a")
        second, body2 = await run.fetch("GET", "/page/a")
        self.assertEqual(body1, body2)
        self.assertEqual(run.origin.hits["/page/a"], 1)
        self.assertEqual(header(first, "cache-status"), "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(header(second, "cache-status"), "phantom-frame; hit")
        self.assertEqual(second.length, len(body2))
        self.assertIn("Accept-Encoding", header(second, "vary"))
        self.assertIsNotNone(header(second, "age"))

    async def test_query_is_part_of_key(self) -> None:
        """
        Different queries are different entries.
        """
        run = Running(self)
        await run.fetch("GET", "/page/q?a=1")
        await run.fetch("GET", "/page/q?a=2")
        await run.fetch("GET", "/page/q?a=1")
        self.assertEqual(run.origin.hits["/page/q"], 2)

    async def test_head_served_from_get_entry(self) -> None:
        """
        A HEAD after a GET is a hit with the GET's headers and no body; a
        HEAD miss fills the GET entry.
        """
        run = Running(self)
        await run.fetch("GET", "/page/h")
        response, body = await run.fetch("HEAD", "/page/h")
        self.assertEqual(body, b"")
        self.assertEqual(header(response, "cache-status"), "phantom-frame; hit")
        self.assertEqual(run.origin.hits["/page/h"], 1)
        response, body = await run.fetch("HEAD", "/page/h2")
        self.assertEqual(body, b"")
        response, body = await run.fetch("GET", "/page/h2")
        self.assertEqual(header(response, "cache-status"), "phantom-frame; hit")
        self.assertEqual(run.origin.hits["/page/h2"], 1)

    async def test_concurrent_misses_coalesce(self) -> None:
        """
        50 concurrent misses for one key make one origin request; all 50
        get the page.
        """
        run = Running(self)
        run.origin.gate = Deferred()
        pending = [run.fetch("GET", "/gated") for _ in range(50)]
        for _ in range(100):
            await wait(0.02)
            if run.server.cache.coalesced >= 49:
                break
        run.origin.gate.callback(None)
        results = await gather(pending)
        self.assertEqual(run.origin.hits["/gated"], 1)
        self.assertEqual({body for _, body in results}, {PAGE})
        statuses = sorted(header(r, "cache-status") for r, _ in results)
        self.assertEqual(statuses.count("phantom-frame; fwd=uri-miss; collapsed"), 49)
        self.assertEqual(statuses.count("phantom-frame; fwd=uri-miss; stored"), 1)

    async def test_private_responses_never_shared(self) -> None:
        """
        C{Set-Cookie}, C{no-store} and C{private} responses are not stored:
        every request reaches the origin and gets its own answer.
        """
        run = Running(self)
        for path, reason in (("/cookie", "set-cookie"), ("/nostore", "no-store"), ("/private", "private")):
            first, body1 = await run.fetch("GET", path)
            second, body2 = await run.fetch("GET", path)
            self.assertEqual(run.origin.hits[path], 2, path)
            self.assertNotEqual(body1, body2)
            self.assertEqual(header(second, "cache-status"), "phantom-frame; fwd=uri-miss; detail=" + reason)

    async def test_authorization_bypasses(self) -> None:
        """
        A request with C{Authorization} is neither answered from nor stored
        in the cache.
        """
        run = Running(self)
        await run.fetch("GET", "/page/auth")
        response, _ = await run.fetch("GET", "/page/auth", headers={"Authorization": "Bearer x"})
        self.assertEqual(run.origin.hits["/page/auth"], 2)
        self.assertEqual(header(response, "cache-status"), "phantom-frame; fwd=bypass; detail=authorization")

    async def test_strategies(self) -> None:
        """
        Each cache strategy stores only its media types.
        """
        cases = {
            "only_html": {"/page/s": True, "/i.png": False, "/s.css": False, "/plain": False},
            "no_images": {"/page/s": True, "/i.png": False, "/s.css": True, "/plain": True},
            "only_images": {"/page/s": False, "/i.png": True, "/s.css": False},
            "only_assets": {"/page/s": False, "/i.png": True, "/s.css": True, "/d.json": True},
            "all": {"/page/s": True, "/i.png": True, "/plain": True},
            "none": {"/page/s": False, "/i.png": False},
        }
        for strategy, paths in cases.items():
            run = Running(self, CreateProxyConfig().with_cache_strategy(strategy))
            for path, cached in paths.items():
                await run.fetch("GET", path)
                await run.fetch("GET", path)
                self.assertEqual(run.origin.hits[path], 1 if cached else 2, (strategy, path))

    async def test_compression_modes(self) -> None:
        """
        Stored bodies are compressed with the server's strategy once served
        again (in identity until then, with C{Vary: Accept-Encoding}), on
        the idle threads; clients that accept it get the stored coding,
        others the identity body.
        """
        decoders = {"br": brotli.decompress, "gzip": gzip.decompress, "deflate": zlib.decompress}
        for strategy, coding in (("brotli", "br"), ("gzip", "gzip"), ("deflate", "deflate")):
            run = Running(self, CreateProxyConfig().with_compress_strategy(strategy))
            headers = {"Accept-Encoding": coding}
            for _ in range(2):
                response, body = await run.fetch("GET", "/page/c", headers=headers)
                self.assertIsNone(header(response, "content-encoding"))
                self.assertEqual(header(response, "vary"), "Accept-Encoding")
            await until(lambda: run.server.cache.compressions == 1)
            response, body = await run.fetch("GET", "/page/c", headers=headers)
            self.assertEqual(header(response, "content-encoding"), coding)
            self.assertEqual(response.length, len(body))
            expected = decoders[coding](body)
            response, plain = await run.fetch("GET", "/page/c", headers={"Accept-Encoding": "identity"})
            self.assertIsNone(header(response, "content-encoding"))
            self.assertEqual(plain, expected)
            self.assertTrue(plain.startswith(PAGE))
            self.assertEqual(run.origin.hits["/page/c"], 1)
        run = Running(self, CreateProxyConfig().with_compress_strategy("none"))
        await run.fetch("GET", "/page/c")
        response, body = await run.fetch("GET", "/page/c", headers={"Accept-Encoding": "br, gzip"})
        self.assertIsNone(header(response, "content-encoding"))
        self.assertTrue(body.startswith(PAGE))

    async def test_not_acceptable(self) -> None:
        """
        A client that accepts neither the stored coding, nor one
        phantom-frame can make, nor identity gets 406.
        """
        run = Running(self)
        await run.fetch("GET", "/page/n")
        response, _ = await run.fetch("GET", "/page/n", headers={"Accept-Encoding": "zstd, identity;q=0"})
        self.assertEqual(response.code, 406)

    async def test_origin_gzip_is_decoded_and_recompressed(self) -> None:
        """
        An origin-gzipped body is stored with the server's coding and served
        decoded to clients without it.
        """
        run = Running(self)
        response, body = await run.fetch("GET", "/gzip", headers={"Accept-Encoding": "identity"})
        self.assertEqual(body, PAGE)
        response, body = await run.fetch("GET", "/gzip", headers={"Accept-Encoding": "br"})
        self.assertEqual((header(response, "content-encoding"), body), (None, PAGE))
        await until(lambda: run.server.cache.compressions == 1)
        response, body = await run.fetch("GET", "/gzip", headers={"Accept-Encoding": "br"})
        self.assertEqual(header(response, "content-encoding"), "br")
        self.assertEqual(brotli.decompress(body), PAGE)
        self.assertEqual(run.origin.hits["/gzip"], 1)

    async def test_unknown_encoding_stored_as_is(self) -> None:
        """
        A body in an unknown coding is stored and relayed as it is.
        """
        run = Running(self)
        for accept in ("identity", "br"):
            response, body = await run.fetch("GET", "/weird-encoding", headers={"Accept-Encoding": accept})
            self.assertEqual((body, header(response, "content-encoding")), (b"opaque", "x-custom"))
        self.assertEqual(header(response, "cache-status"), "phantom-frame; hit")
        self.assertEqual(run.origin.hits["/weird-encoding"], 1)

    async def test_404_cache(self) -> None:
        """
        404s are cached (in their own LRU) unless the capacity is 0; 5xx
        never are.
        """
        run = Running(self)
        for _ in range(2):
            response, _ = await run.fetch("GET", "/status/404")
            self.assertEqual(response.code, 404)
            await run.fetch("GET", "/status/500")
        self.assertEqual(run.origin.hits["/status/404"], 1)
        self.assertEqual(run.origin.hits["/status/500"], 2)
        run = Running(self, CreateProxyConfig().with_cache_404_capacity(0))
        await run.fetch("GET", "/status/404")
        await run.fetch("GET", "/status/404")
        self.assertEqual(run.origin.hits["/status/404"], 2)

    async def test_soft_404(self) -> None:
        """
        With C{use_404_meta}, a page marked as a soft 404 is stored in the
        404 cache and served with status 404.
        """
        run = Running(self, CreateProxyConfig().with_use_404_meta(True))
        first, _ = await run.fetch("GET", "/soft404")
        second, _ = await run.fetch("GET", "/soft404")
        self.assertEqual((first.code, second.code), (404, 404))
        self.assertEqual(run.origin.hits["/soft404"], 1)

    async def test_too_large_streams_unstored(self) -> None:
        """
        Responses over C{max_cacheable_bytes} stream through, unstored,
        whether or not their length is known up front.
        """
        run = Running(self, CreateProxyConfig().with_max_cacheable_bytes(100000))
        for query in ("n=300000", "n=300000&length=1"):
            for _ in range(2):
                response, body = await run.fetch("GET", "/big?" + query)
                self.assertEqual(len(body), 300000)
                self.assertEqual(header(response, "cache-status"), "phantom-frame; fwd=uri-miss; detail=size")
        self.assertEqual(run.origin.hits["/big"], 4)

    async def test_vary(self) -> None:
        """
        The origin's C{Vary} keys variants by those request headers.
        """
        run = Running(self)
        for lang in ("en", "fr", "en", "fr"):
            _, body = await run.fetch("GET", "/vary", headers={"Accept-Language": lang})
            self.assertEqual(body, b"lang=" + lang.encode())
        self.assertEqual(run.origin.hits["/vary"], 2)

    async def test_include_exclude(self) -> None:
        """
        Include and exclude patterns choose what is cached; an include that
        names POST makes POST cacheable.
        """
        config = CreateProxyConfig().with_include_paths(["/page/*", "POST /echo/search"]).with_exclude_paths(
            ["/page/private/*"]
        )
        run = Running(self, config)
        for path in ("/page/x", "/page/private/y", "/other"):
            await run.fetch("GET", path)
            await run.fetch("GET", path)
        self.assertEqual(run.origin.hits["/page/x"], 1)
        self.assertEqual(run.origin.hits["/page/private/y"], 2)
        self.assertEqual(run.origin.hits["/other"], 2)

    async def test_custom_key_function(self) -> None:
        """
        A custom key function receives the request's method, stripped path,
        query and lower-cased headers, and its key decides what is shared.
        """
        seen = []

        def key(info):
            seen.append(info)
            return info.method + ":" + info.path + ":" + info.headers.get("x-tenant", "")

        run = Running(self, CreateProxyConfig().with_cache_key_fn(key))
        await run.fetch("GET", "/page/k?a=1", headers={"X-Tenant": "t1"})
        await run.fetch("GET", "/page/k?a=2", headers={"X-Tenant": "t1"})
        await run.fetch("GET", "/page/k?a=1", headers={"X-Tenant": "t2"})
        self.assertEqual(run.origin.hits["/page/k"], 2)
        self.assertEqual((seen[0].method, seen[0].path, seen[0].query), ("GET", "/page/k", "a=1"))
        self.assertEqual(run.handle.invalidate("GET:/page/k:t1"), 1)

    async def test_mounted_with_put_child(self) -> None:
        """
        The resource works mounted under a path with C{putChild}: the path
        it is mounted at is stripped.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        run = Running(self)
        root = Resource()
        root.putChild(b"app", run.resource)
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        response = await run.client.request(b"GET", b"http://127.0.0.1:%d/app/page/m?q=1" % port.getHost().port)
        body = await treq.content(response)
        self.assertEqual(response.code, 200)
        self.assertTrue(body.startswith(PAGE))
        self.assertEqual(run.origin.requests[-1]["uri"], "/page/m?q=1")

    async def test_invalidate(self) -> None:
        """
        C{CacheHandle.invalidate} and C{invalidate_all} drop entries at once.
        """
        run = Running(self)
        for path in ("/page/a", "/page/b", "/other"):
            await run.fetch("GET", path)
        self.assertEqual(run.handle.invalidate("/page/*"), 2)
        for path in ("/page/a", "/page/b", "/other"):
            await run.fetch("GET", path)
        self.assertEqual(run.origin.hits["/page/a"], 2)
        self.assertEqual(run.origin.hits["/other"], 1)
        run.handle.invalidate_all()
        await run.fetch("GET", "/other")
        self.assertEqual(run.origin.hits["/other"], 2)

    async def test_filesystem_mode(self) -> None:
        """
        In filesystem mode bodies live in files under the server's bucket,
        hits are served from them, a body compressed after its fill replaces
        its file, and invalidation deletes them.
        """
        import os

        directory = self.mktemp()
        run = Running(
            self, CreateProxyConfig().with_cache_storage_mode("filesystem").with_cache_directory(directory)
        )
        await run.fetch("GET", "/page/f")
        response, body = await run.fetch("GET", "/page/f", headers={"Accept-Encoding": "identity"})
        self.assertTrue(body.startswith(PAGE))
        self.assertEqual(run.origin.hits["/page/f"], 1)
        # The identity file gives way to the compressed one (deleted off
        # the reactor thread, once no read of it is under way).
        await until(lambda: run.server.cache.compressions == 1)
        bucket = os.path.join(directory, "default")
        await until(lambda: len(os.listdir(bucket)) == 1)
        [entry] = run.server.cache.entries()
        self.assertEqual(os.listdir(bucket), [os.path.basename(entry.body.path)])
        response, again = await run.fetch("GET", "/page/f", headers={"Accept-Encoding": "identity"})
        self.assertEqual(again, body)
        run.handle.invalidate_all()
        for _ in range(50):
            if not os.listdir(bucket):
                break
            await wait(0.02)
        self.assertEqual(os.listdir(bucket), [])
