"""
How origin responses are read off the wire, over raw sockets: headers named
in C{Connection} are dropped (the origin client hides C{Connection} itself),
and bodies framed otherwise than by C{Content-Length} or C{chunked} -- a
C{Transfer-Encoding} such as C{gzip}, an HTTP/1.0 origin without a length --
are read to the connection's close, their transfer codings undone.
"""

from __future__ import annotations

import gzip
import zlib

from twisted.trial.unittest import TestCase

from phantom_frame import CacheStrategy, CreateProxyConfig
from phantom_frame.proxy.transfer import connection_named, transfer_codings

from tests.proxy.raw import RawProxy, response

CONFIG = CreateProxyConfig("http://unused.test").with_compress_strategy("none")
PASSTHROUGH = CONFIG.with_cache_strategy(CacheStrategy.NONE)
PAGE = b"<html>" + b"framed page " * 50 + b"</html>"


def raw(head: str, body: bytes) -> bytes:
    """
    @return: a response head (lines joined with CRLF) and its body.
    """
    return (head.replace("\n", "\r\n") + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes) -> bytes:
    """
    @return: C{body} in two chunks and the last chunk.
    """
    half = len(body) // 2
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])) + b"0\r\n\r\n"


class ConnectionHeaderTests(TestCase):
    """
    RFC 9110 §7.6.1: the headers an origin's C{Connection} names are its
    own business with the proxy, never relayed nor stored.
    """

    NAMED = response(
        "200 OK",
        PAGE,
        "Content-Type: text/html",
        "Connection: close, X-Hop-A, x-hop-b",
        "X-Hop-A: 1",
        "X-HOP-B: 2",
        "Keep-Alive: timeout=5",
        "X-End-To-End: 3",
    )

    def assertDropped(self, answer, label: str) -> None:
        """
        C{answer} is a 200 without the hop-by-hop headers, with the others.
        """
        headers = answer.headers
        self.assertEqual(answer.code, 200, label)
        self.assertNotIn("x-hop-a", headers, label)
        self.assertNotIn("x-hop-b", headers, label)
        self.assertNotIn("keep-alive", headers, label)
        self.assertEqual(headers.get("x-end-to-end"), "3", label)

    async def test_passthrough(self) -> None:
        """
        A relayed answer drops them.
        """
        proxy = RawProxy(self, PASSTHROUGH, [self.NAMED])
        self.assertDropped(await proxy.get(), "pass-through")

    async def test_stored(self) -> None:
        """
        A stored answer drops them, on the miss and on every hit.
        """
        proxy = RawProxy(self, CONFIG, [self.NAMED])
        self.assertDropped(await proxy.get(), "miss")
        answer = await proxy.get()
        self.assertDropped(answer, "hit")
        self.assertEqual(answer.headers["cache-status"], "phantom-frame; hit")

    def test_tokens(self) -> None:
        """
        L{connection_named} reads every value, any case, any spacing.
        """
        self.assertEqual(connection_named([b"close, X-A", b" x-b ,,"]), [b"close", b"x-a", b"x-b"])


class TransferCodingTests(TestCase):
    """
    RFC 9112 §6.3: a body whose last transfer coding is not C{chunked} ends
    with the connection; its transfer codings are undone. Never a 502 for
    a coding phantom-frame can undo.
    """

    FRAMINGS = {
        "gzip, close-delimited": raw("HTTP/1.1 200 OK\nContent-Type: text/html\nTransfer-Encoding: gzip", gzip.compress(PAGE)),
        "deflate, close-delimited": raw("HTTP/1.1 200 OK\nContent-Type: text/html\nTransfer-Encoding: deflate", zlib.compress(PAGE)),
        "gzip then chunked": raw(
            "HTTP/1.1 200 OK\nContent-Type: text/html\nTransfer-Encoding: gzip\nTransfer-Encoding: chunked",
            chunked(gzip.compress(PAGE)),
        ),
        "gzip, chunked in one": raw(
            "HTTP/1.1 200 OK\nContent-Type: text/html\nTransfer-Encoding: GZIP, Chunked", chunked(gzip.compress(PAGE))
        ),
        "identity": raw("HTTP/1.1 200 OK\nContent-Type: text/html\nTransfer-Encoding: identity", PAGE),
        "HTTP/1.0 without a length": raw("HTTP/1.0 200 OK\nContent-Type: text/html", PAGE),
        "HTTP/1.1 without a length": raw("HTTP/1.1 200 OK\nContent-Type: text/html\nConnection: close", PAGE),
    }

    async def test_passthrough(self) -> None:
        """
        Relayed with the decoded body.
        """
        for name, framed in self.FRAMINGS.items():
            proxy = RawProxy(self, PASSTHROUGH, [framed])
            answer = await proxy.get()
            self.assertEqual((answer.code, answer.body), (200, PAGE), name)
            self.assertNotIn("content-encoding", answer.headers, name)
            self.assertEqual(proxy.warnings(), [], name)

    async def test_stored(self) -> None:
        """
        Stored with the decoded body, and served from the cache after.
        """
        for name, framed in self.FRAMINGS.items():
            proxy = RawProxy(self, CONFIG, [framed])
            answer = await proxy.get()
            self.assertEqual((answer.code, answer.body), (200, PAGE), name)
            answer = await proxy.get()
            self.assertEqual((answer.code, answer.body), (200, PAGE), name)
            self.assertEqual(answer.headers["cache-status"], "phantom-frame; hit", name)
            self.assertEqual(len(proxy.origin.heads), 1, name)

    async def test_broken_transfer_coding(self) -> None:
        """
        A transfer-coded body that does not decode, or ends too soon, is a
        broken body: a 502 for a fill, nothing stored.
        """
        for name, framed in {
            "garbage": raw("HTTP/1.1 200 OK\nContent-Type: text/html\nTransfer-Encoding: gzip", b"not gzip at all"),
            "cut": raw("HTTP/1.1 200 OK\nContent-Type: text/html\nTransfer-Encoding: gzip", gzip.compress(PAGE)[:40]),
            "cut, chunked": raw(
                "HTTP/1.1 200 OK\nContent-Type: text/html\nTransfer-Encoding: gzip, chunked",
                chunked(gzip.compress(PAGE)[:40]),
            ),
        }.items():
            proxy = RawProxy(self, CONFIG, [framed])
            answer = await proxy.get()
            self.assertEqual(answer.code, 502, name)
            self.assertEqual(len(proxy.warnings()), 1, name)
            self.assertEqual(proxy.tracebacks(), [], name)

    async def test_unknown_transfer_coding(self) -> None:
        """
        A transfer coding phantom-frame cannot undo is a 502 that names it.
        """
        proxy = RawProxy(self, CONFIG, [raw("HTTP/1.1 200 OK\nTransfer-Encoding: x-magic, chunked", chunked(PAGE))])
        answer = await proxy.get()
        self.assertEqual(answer.code, 502)
        warnings = proxy.warnings()
        self.assertEqual(len(warnings), 1)
        self.assertIn("x-magic", warnings[0])

    def test_codings(self) -> None:
        """
        L{transfer_codings} lists every value's codings in order, without
        parameters.
        """
        self.assertEqual(
            transfer_codings([b"GZIP;q=1, x-magic", b" chunked "]), ["gzip", "x-magic", "chunked"]
        )
