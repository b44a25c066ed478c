"""
Tests for L{phantom_frame.proxy.serve.EntryRenderer}: an answer whose body
is at hand is written at once; another is written once its body is read.
"""

from __future__ import annotations

from typing import List

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import Request
from twisted.web.test.requesthelper import DummyChannel

from phantom_frame.cache.codec import Codec
from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.responses import ResponseCache
from phantom_frame.cache.store import MemoryStore, StoredBody
from phantom_frame.cache.threads import runInline
from phantom_frame.proxy import status as statuses
from phantom_frame.proxy.exchange import Exchange
from phantom_frame.proxy.negotiation import Full, Partial
from phantom_frame.proxy.serve import EntryRenderer


class _Store(MemoryStore):
    """
    A memory store that counts its reads, and answers those of a body kept
    elsewhere (C{path}) when told to.

    @ivar reads: the L{Deferred} of each read of a body not in memory.
    """

    def __init__(self) -> None:
        self.count = 0
        self.reads: List[Deferred[bytes]] = []

    def read(self, stored: StoredBody) -> Deferred[bytes]:
        """
        @return: the body in memory, or a L{Deferred} of L{reads}.
        """
        self.count += 1
        if stored.data is not None:
            return super().read(stored)
        d: Deferred[bytes] = Deferred()
        self.reads.append(d)
        return d


class RenderTests(SynchronousTestCase):
    """
    L{EntryRenderer.render}.
    """

    def setUp(self) -> None:
        """
        A renderer over a cache in a counting store.
        """
        self.clock = Clock()
        self.store = _Store()
        cache = ResponseCache("test", self.store, self.clock, 1 << 20, 0)
        self.renderer = EntryRenderer(self.clock, cache, Codec(runInline))

    def entry(self, body: StoredBody) -> CacheEntry:
        """
        @return: a stored 200 of C{body}.
        """
        return CacheEntry(
            key="k", status=200, phrase=b"OK", headers=((b"Content-Type", b"text/plain"),), coding="identity",
            body=body, identity_length=body.size, stored_at=0.0,
        )

    def request(self) -> Request:
        """
        @return: a GET request on a channel of its own (L{written}).
        """
        self.channel = DummyChannel()
        request = Request(self.channel)
        request.method = b"GET"
        return request

    def written(self) -> bytes:
        """
        @return: what the last request's channel was sent.
        """
        return self.channel.transport.written.getvalue()

    def test_inMemory(self) -> None:
        """
        The stored bytes in memory are written at once: the L{Deferred}
        has fired, and the store was not asked for them.
        """
        request = self.request()
        d = self.renderer.render(Exchange(request), self.entry(StoredBody(5, b"hello")), Full("identity"), statuses.STORED)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.store.count, 0)
        self.assertTrue(request.finished)
        self.assertTrue(self.written().endswith(b"\r\n\r\nhello"))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-length"), [b"5"])

    def test_partInMemory(self) -> None:
        """
        A range of a body in memory is written at once too.
        """
        request = self.request()
        d = self.renderer.render(Exchange(request), self.entry(StoredBody(5, b"hello")), Partial(1, 2), statuses.HIT)
        self.successResultOf(d)
        self.assertEqual(self.store.count, 0)
        self.assertEqual(request.code, 206)
        self.assertTrue(self.written().endswith(b"\r\n\r\nel"))

    def test_read(self) -> None:
        """
        A body not in memory is read from the store; the answer is written
        once it is.
        """
        request = self.request()
        d = self.renderer.render(
            Exchange(request), self.entry(StoredBody(5, None, "/bucket/k")), Full("identity"), statuses.HIT
        )
        self.assertNoResult(d)
        self.assertFalse(request.startedWriting)
        self.store.reads.pop().callback(b"hello")
        self.successResultOf(d)
        self.assertTrue(self.written().endswith(b"\r\n\r\nhello"))

    def test_readClientGone(self) -> None:
        """
        A client gone while its body was read is not written to.
        """
        request = self.request()
        exchange = Exchange(request)
        d = self.renderer.render(exchange, self.entry(StoredBody(5, None, "/bucket/k")), Full("identity"), statuses.HIT)
        request.connectionLost(Exception("gone"))
        self.store.reads.pop().callback(b"hello")
        self.successResultOf(d)
        self.assertFalse(request.startedWriting)
