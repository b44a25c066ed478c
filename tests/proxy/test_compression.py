"""
Compression and negotiation end to end, in memory on a L{task.Clock}: the
origin's C{Vary} sent verbatim, other codings made beside a stored entry,
and requests that are not stored passed through with the client's own
C{Accept-Encoding} (answers compressed on the fly: C{test_on_the_fly}).
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Any, Dict, List, Optional, Tuple

from treq.testing import RequestTraversalAgent
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from phantom_frame.cache.bus import RedisNode
from phantom_frame.cache.codec import brotli
from tests.proxy.test_http_semantics import PRERENDER, Harness, header

#: A body worth compressing.
PAGE = b"<html><body>" + b"<p>phantom frame</p>" * 200 + b"</body></html>"


class Collector(Protocol):
    """
    Collects a response body as it arrives.
    """

    def __init__(self) -> None:
        """
        Nothing received yet.
        """
        self.data: List[bytes] = []
        self.done = False
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}.
        """
        self.data.append(data)

    def connectionLost(self, reason: Any) -> None:
        """
        The body ended, for C{reason}.
        """
        self.done = True
        self.reason = reason


class Client:
    """
    A plain client of a L{Harness}'s proxy: it sends exactly the headers it
    is given (treq would add C{Accept-Encoding: gzip} and decode) and reads
    bodies as they come.
    """

    def __init__(self, harness: Harness) -> None:
        """
        @param harness: the proxy to talk to.
        """
        self.harness = harness
        self.agent = RequestTraversalAgent(harness.resource)

    def flush(self) -> None:
        """
        Move every pending byte, client and origin side, and run what the
        proxy scheduled for now.
        """
        for _ in range(50):
            self.agent.flush()
            self.harness.agent.flush()
            self.harness.clock.advance(0)

    def get(self, path: str, method: str = "GET", **headers: str) -> Tuple[Any, bytes, str]:
        """
        @return: the response to C{method path} with C{headers} (underscores
            become dashes), its raw body and its C{Cache-Status}.
        """
        raw = Headers({k.replace("_", "-"): [v] for k, v in headers.items()})
        d = self.agent.request(method.encode(), b"http://proxy.test" + path.encode(), raw)
        self.flush()
        response = d.result
        collector = Collector()
        response.deliverBody(collector)
        self.flush()
        assert collector.done, "the body did not end"
        status = response.headers.getRawHeaders(b"cache-status", [b""])[0].decode()
        return response, b"".join(collector.data), status


def vary(response: Any) -> Optional[str]:
    """
    @return: every C{Vary} value of C{response}, joined, or L{None}.
    """
    values = response.headers.getRawHeaders(b"vary")
    return None if values is None else ", ".join(v.decode() for v in values)


class VaryTests(SynchronousTestCase):
    """
    The C{Vary} sent to clients is the origin's, verbatim, with
    C{Accept-Encoding} appended only when phantom-frame's own negotiation
    can change the body.
    """

    def test_verbatim_identity_storage(self) -> None:
        """
        Without compression the origin's C{Vary} goes out as it was sent,
        names and case, on the miss, on the hit and on a 304; nothing is
        appended.
        """
        h = Harness(PRERENDER, compress="none")
        c = Client(h)
        h.serve("/v", body=PAGE, vary="accept-LANGUAGE,X-Theme", etag='"v"')
        miss, _, status = c.get("/v")
        self.assertIn("stored", status)
        hit, _, status = c.get("/v")
        self.assertEqual(status, "phantom-frame; hit")
        not_modified, _, _ = c.get("/v", if_none_match='"v"')
        self.assertEqual(not_modified.code, 304)
        for response in (miss, hit, not_modified):
            self.assertEqual(vary(response), "accept-LANGUAGE,X-Theme")

    def test_no_vary_identity_storage(self) -> None:
        """
        An origin that sends no C{Vary} gets none added when the body is
        only ever sent as stored.
        """
        h = Harness(PRERENDER, compress="none")
        c = Client(h)
        h.serve("/n", body=PAGE)
        miss, _, _ = c.get("/n", accept_encoding="gzip")
        hit, _, _ = c.get("/n", accept_encoding="gzip")
        self.assertEqual((vary(miss), vary(hit)), (None, None))

    def test_appended_when_negotiated(self) -> None:
        """
        A compressible body stored compressed may go out in several
        codings: C{Accept-Encoding} is appended to the origin's C{Vary},
        whatever coding this client gets.
        """
        h = Harness(PRERENDER, compress="brotli", on_fill=True)
        c = Client(h)
        h.serve("/c", body=PAGE, vary="X-Theme")
        miss, _, _ = c.get("/c", accept_encoding="br")
        hit, _, _ = c.get("/c")
        self.assertEqual(header(miss, "content-encoding"), "br")
        self.assertIsNone(header(hit, "content-encoding"))
        self.assertEqual((vary(miss), vary(hit)), ("X-Theme, Accept-Encoding", "X-Theme, Accept-Encoding"))
        h.serve("/plain", body=PAGE)
        c.get("/plain")
        self.assertEqual(vary(c.get("/plain")[0]), "Accept-Encoding")

    def test_not_repeated(self) -> None:
        """
        An origin C{Vary} that lists C{Accept-Encoding} already (any case)
        is sent as it is.
        """
        h = Harness(PRERENDER, compress="brotli")
        c = Client(h)
        h.serve("/a", body=PAGE, vary="accept-encoding, Origin")
        c.get("/a")
        self.assertEqual(vary(c.get("/a")[0]), "accept-encoding, Origin")

    def test_tiny_body(self) -> None:
        """
        A body too small to compress is stored and sent as identity only:
        nothing is appended to the origin's (absent) C{Vary}.
        """
        h = Harness(PRERENDER, compress="brotli")
        c = Client(h)
        h.serve("/t", body=b"tiny")
        c.get("/t", accept_encoding="br")
        response, body, _ = c.get("/t", accept_encoding="br")
        self.assertEqual(body, b"tiny")
        self.assertIsNone(vary(response))


class LaterTests(SynchronousTestCase):
    """
    By default a stored body is compressed once it is served again: the
    fill stores and answers it in identity, with C{Accept-Encoding} in its
    C{Vary}; the first hit has it compressed; later hits get the stored
    coding. Snapshots, and C{compress_on_fill}, are compressed at the fill.
    """

    def test_compressed_once_served_again(self) -> None:
        """
        The miss and the first hit of a Brotli client are identity (the
        origin's strong ETag, C{Vary: Accept-Encoding}); the entry is then
        stored in Brotli, and later hits get it with the ETag weakened,
        while an identity client still gets the body it got before.
        """
        h = Harness(PRERENDER, compress="brotli")
        c = Client(h)
        server = next(h.handle.servers())
        h.serve("/l", body=PAGE, etag='"l1"', vary="X-Theme")
        answers = [c.get("/l", accept_encoding="br") for _ in range(2)]
        [entry] = server.cache.entries()
        for response, body, _ in answers:
            self.assertEqual((header(response, "content-encoding"), body), (None, PAGE))
            self.assertEqual(vary(response), "X-Theme, Accept-Encoding")
            self.assertEqual(header(response, "etag"), '"l1"')
            self.assertEqual(response.length, len(PAGE))
        self.assertEqual([status for _, _, status in answers], ["phantom-frame; fwd=uri-miss; stored", "phantom-frame; hit"])
        self.assertEqual((entry.coding, entry.compress_pending, server.cache.compressions), ("br", False, 1))
        response, body, status = c.get("/l", accept_encoding="br")
        self.assertEqual((header(response, "content-encoding"), status), ("br", "phantom-frame; hit"))
        self.assertEqual(brotli.decompress(body), PAGE)
        self.assertEqual(header(response, "etag"), 'W/"l1"')
        response, body, _ = c.get("/l")
        self.assertEqual((header(response, "content-encoding"), body, vary(response)), (None, PAGE, "X-Theme, Accept-Encoding"))
        self.assertEqual(h.origin.hits("/l"), 1)

    def test_waiting_entry(self) -> None:
        """
        Until it is served again, the entry holds the identity body, waits
        to be compressed, and is accounted at its identity size.
        """
        h = Harness(PRERENDER, compress="gzip")
        server = next(h.handle.servers())
        h.serve("/w", body=PAGE)
        Client(h).get("/w", accept_encoding="gzip")
        [entry] = server.cache.entries()
        self.assertEqual((entry.coding, entry.compress_pending, entry.body.data), ("identity", True, PAGE))
        self.assertEqual(server.cache.bytes, entry.size)
        self.assertGreater(entry.size, len(PAGE))

    def test_on_fill(self) -> None:
        """
        With C{compress_on_fill}, the body is compressed before it is
        stored, and the miss is answered compressed.
        """
        h = Harness(PRERENDER, compress="brotli", on_fill=True)
        server = next(h.handle.servers())
        h.serve("/f", body=PAGE)
        response, body, _ = Client(h).get("/f", accept_encoding="br")
        self.assertEqual(header(response, "content-encoding"), "br")
        self.assertEqual(brotli.decompress(body), PAGE)
        [entry] = server.cache.entries()
        self.assertEqual((entry.coding, entry.compress_pending, server.cache.compressions), ("br", False, 0))

    def test_snapshot_compressed_at_once(self) -> None:
        """
        A snapshot, fetched to be served, is compressed when fetched.
        """
        config = PRERENDER._with(proxy_mode="pre_generate", pre_generate_paths=("/s",))
        h = Harness(config, compress="brotli")
        server = next(h.handle.servers())
        h.serve("/s", body=PAGE)
        server.snapshots.warm_up()
        Client(h).flush()
        [entry] = server.cache.entries()
        self.assertEqual((entry.pinned, entry.coding, entry.compress_pending), (True, "br", False))

    def test_redis_tier(self) -> None:
        """
        A server whose cache is shared through Redis compresses at the fill:
        the other nodes read the compressed body from Redis.
        """
        clock = Clock()
        node = RedisNode("unix:///nonexistent.sock", clock, l1_bytes=1 << 20)
        h = Harness(PRERENDER._with(cache_storage_mode="redis"), clock, compress="brotli", redis=node)
        server = next(h.handle.servers())
        h.serve("/r", body=PAGE)
        response, body, _ = Client(h).get("/r", accept_encoding="br")
        self.assertEqual(brotli.decompress(body), PAGE)
        [entry] = server.cache.entries()
        self.assertEqual((entry.coding, entry.compress_pending), ("br", False))
        self.flushLoggedErrors()

    def test_identity_storage(self) -> None:
        """
        With C{compress_strategy = "none"}, nothing waits to be compressed.
        """
        h = Harness(PRERENDER, compress="none")
        server = next(h.handle.servers())
        h.serve("/n", body=PAGE)
        c = Client(h)
        for _ in range(2):
            response, _, _ = c.get("/n", accept_encoding="br")
            self.assertIsNone(vary(response))
        [entry] = server.cache.entries()
        self.assertEqual((entry.coding, entry.compress_pending), ("identity", False))


class OtherCodingTests(SynchronousTestCase):
    """
    A client that does not accept the stored coding gets one phantom-frame
    can make, made once from the stored body and kept beside the entry.
    """

    def setUp(self) -> None:
        """
        A brotli-storing proxy whose origin serves a page at C{/p}, stored
        compressed at the fill.
        """
        self.h = Harness(PRERENDER, compress="brotli", on_fill=True)
        self.c = Client(self.h)
        self.server = next(self.h.handle.servers())
        self.h.serve("/p", body=PAGE, etag='"p1"')

    def test_gzip_only_client(self) -> None:
        """
        A gzip-only browser in front of brotli storage gets gzip: a hit,
        with an exact C{Content-Length}, the ETag weakened and
        C{Vary: Accept-Encoding}; the gzip body is made once and counted in
        the cache's bytes.
        """
        self.c.get("/p")
        before = self.server.cache.bytes
        response, body, status = self.c.get("/p", accept_encoding="gzip, deflate")
        self.assertEqual(status, "phantom-frame; hit")
        self.assertEqual(header(response, "content-encoding"), "gzip")
        self.assertEqual(gzip.decompress(body), PAGE)
        self.assertEqual(response.length, len(body))
        self.assertEqual(header(response, "etag"), 'W/"p1"')
        self.assertEqual(vary(response), "Accept-Encoding")
        self.assertEqual(self.server.cache.bytes, before + len(body))
        again, body2, status = self.c.get("/p", accept_encoding="gzip, deflate")
        self.assertEqual((body2, status), (body, "phantom-frame; hit"))
        self.assertEqual(self.server.entries.alternates.made, 1)
        self.assertEqual(self.h.origin.hits("/p"), 1)

    def test_fill_answers_identity(self) -> None:
        """
        The fill that stores a brotli body answers an identity client (and
        the identity clients waiting for it) from the body it decoded, not
        by decoding the stored one; a later hit decodes it.
        """
        codec = self.server.entries.alternates._codec
        decoded: List[bytes] = []
        decode = codec.decode

        def counting(body: bytes, coding: Optional[bytes]) -> Any:
            if coding is not None:
                # (The fill's own decoding of the origin's body has none.)
                decoded.append(coding)
            return decode(body, coding)

        self.patch(codec, "decode", counting)
        response, body, status = self.c.get("/p")
        self.assertEqual((status, body), ("phantom-frame; fwd=uri-miss; stored", PAGE))
        self.assertEqual(decoded, [])
        self.assertEqual([entry.coding for entry in self.server.cache.entries()], ["br"])
        response, body, status = self.c.get("/p")
        self.assertEqual((status, body), ("phantom-frame; hit", PAGE))
        self.assertEqual(decoded, [b"br"])

    def test_miss(self) -> None:
        """
        The miss of a gzip-only client is answered in gzip too.
        """
        response, body, status = self.c.get("/p", accept_encoding="gzip")
        self.assertEqual(status, "phantom-frame; fwd=uri-miss; stored")
        self.assertEqual(gzip.decompress(body), PAGE)
        response, body, _ = self.c.get("/p", accept_encoding="br")
        self.assertEqual(brotli.decompress(body), PAGE)

    def test_qualities(self) -> None:
        """
        The client's qualities choose among the codings phantom-frame makes;
        HEAD gets the headers of that coding.
        """
        self.c.get("/p")
        response, body, _ = self.c.get("/p", accept_encoding="gzip;q=0.5, deflate;q=0.8")
        self.assertEqual(header(response, "content-encoding"), "deflate")
        self.assertEqual(zlib.decompress(body), PAGE)
        response, body, _ = self.c.get("/p", "HEAD", accept_encoding="gzip")
        self.assertEqual((header(response, "content-encoding"), body), ("gzip", b""))

    def test_identity_storage(self) -> None:
        """
        Nothing is made from a body stored as identity.
        """
        h = Harness(PRERENDER, compress="none")
        c = Client(h)
        h.serve("/i", body=PAGE)
        c.get("/i")
        response, body, _ = c.get("/i", accept_encoding="gzip")
        self.assertEqual((header(response, "content-encoding"), body), (None, PAGE))

    def test_filesystem(self) -> None:
        """
        In filesystem mode the coding made is kept in a file of its own,
        read back for later clients, and removed with its entry.
        """
        config = PRERENDER._with(cache_storage_mode="filesystem", cache_directory=self.mktemp())
        h = Harness(config, compress="brotli", on_fill=True)
        c = Client(h)
        h.serve("/f", body=PAGE)
        c.get("/f")
        first = c.get("/f", accept_encoding="gzip")[1]
        second = c.get("/f", accept_encoding="gzip")[1]
        self.assertEqual((gzip.decompress(first), second), (PAGE, first))
        server = next(h.handle.servers())
        [entry] = server.cache.entries()
        path = entry.alternates["gzip"].path
        self.assertTrue(os.path.exists(path))
        server.invalidate_all()
        self.assertFalse(os.path.exists(path))


def gzipping(headers: Dict[str, str]) -> Tuple[int, Dict[str, str], bytes]:
    """
    An origin answer that gzips its body when the request accepts gzip, as
    an origin with its own compression does.

    @param headers: the request's headers, by lower-cased name.
    """
    answer = {"content-type": "text/html", "vary": "Accept-Encoding"}
    if "gzip" in headers.get("accept-encoding", ""):
        return 200, dict(answer, **{"content-encoding": "gzip"}), gzip.compress(PAGE)
    return 200, answer, PAGE


class BypassTests(SynchronousTestCase):
    """
    A request that cannot be stored is forwarded with the client's own
    C{Accept-Encoding}, and the origin's coding is relayed untouched.
    """

    def test_bypasses(self) -> None:
        """
        Every kind of bypass (method, credentials, exclusion, strategy,
        C{no-store}) forwards C{Accept-Encoding} and relays the origin's
        gzip body, C{Content-Encoding} and C{Vary} as they are.
        """
        cases = [
            (PRERENDER, "POST", {}),
            (PRERENDER, "GET", {"authorization": "Bearer x"}),
            (PRERENDER.with_exclude_paths(["/b"]), "GET", {}),
            (PRERENDER.with_cache_strategy("none"), "GET", {}),
            (PRERENDER._with(cache_policy="http"), "GET", {"cache_control": "no-store"}),
        ]
        for config, method, extra in cases:
            h = Harness(config, compress="brotli")
            h.origin.answers["/b"] = gzipping
            response, body, status = Client(h).get("/b", method, accept_encoding="gzip, br", **extra)
            self.assertIn("bypass", status, (method, extra))
            [(_, _, sent)] = h.origin.requests
            self.assertEqual(sent["accept-encoding"], "gzip, br")
            self.assertEqual(header(response, "content-encoding"), "gzip")
            self.assertEqual(gzip.decompress(body), PAGE)
            self.assertEqual(vary(response), "Accept-Encoding")
