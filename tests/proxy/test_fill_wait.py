"""
Tests for what a fill (L{phantom_frame.proxy.fill.Filler}) holds while it
waits for its origin, and for what it asks of the codec when it stores.
"""

from __future__ import annotations

import gc
import gzip
import inspect
from typing import Any, List

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from phantom_frame import CreateProxyConfig, create_proxy
from phantom_frame.cache.threads import runInline
from phantom_frame.http.routing import Router
from phantom_frame.http.site import ProxySite
from phantom_frame.ops.timing import TimingClient
from tests.memory import Holding, MemoryOrigin

PAGE = b"<html>" + b"stored " * 100 + b"</html>"


class _Origin(Holding):
    """
    The page at any path; C{/gzip} in gzip; C{/slow} when told (held in
    C{waiting}), and C{/varies} (varying on C{X-Variant}) too.
    """

    def render_GET(self, request: Any) -> Any:
        """
        The page, as the path says.
        """
        request.setHeader(b"content-type", b"text/html")
        if request.path == b"/varies":
            request.setHeader(b"vary", b"X-Variant")
            self.waiting.append(request)
            return NOT_DONE_YET
        if request.path == b"/slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        if request.path == b"/gzip":
            request.setHeader(b"content-encoding", b"gzip")
            return gzip.compress(PAGE)
        return PAGE


class _Rig:
    """
    A caching proxy site over L{_Origin} in memory, on a fake clock, its
    origin requests timed.

    @ivar observed: the upstream durations its timing client recorded.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.clock = Clock()
        self.origin = _Origin()
        self.memory = MemoryOrigin(self.origin, self.clock)
        self.observed: List[float] = []
        config = CreateProxyConfig("http://origin.test")
        client = TimingClient(self.memory.client_for(config), self.clock, self.observed.append, lambda: None)
        resource, handle = create_proxy(config, self.clock, agent=object(), client=client, runner=runInline)
        testcase.addCleanup(handle.close)
        self.server = next(handle.servers())
        self.site = ProxySite(Router([("*", resource)]), reactor=self.clock, access_log=False)

    def get(self, path: bytes, *headers: bytes) -> StringTransport:
        """
        Ask for C{path} on a new connection, and move the bytes.

        @return: the client's transport (its protocol as C{protocol}).
        """
        address = IPv4Address("TCP", "192.0.2.7", 4321)
        protocol = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        lines = [b"GET " + path + b" HTTP/1.1", b"Host: proxy.test", *headers]
        protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")
        self.settle()
        return transport

    def settle(self) -> None:
        """
        Move every byte to and from the origin.
        """
        for _ in range(3):
            self.memory.flush()
            self.clock.advance(0)


class WaitTests(SynchronousTestCase):
    """
    A fill waiting for its origin holds callbacks, not coroutines.
    """

    def test_noCoroutine(self) -> None:
        """
        While the origin has not answered, no coroutine of the fill, nor
        of the answer waiting for it, is alive; the answer comes once it
        does.
        """
        rig = _Rig(self)
        transport = rig.get(b"/slow")
        self.assertEqual(len(rig.origin.waiting), 1)
        waiting = [
            o.cr_code.co_qualname for o in gc.get_objects()
            if inspect.iscoroutine(o) and "phantom_frame" in o.cr_code.co_filename
        ]
        self.assertEqual(waiting, [])
        request = rig.origin.waiting.pop()
        request.write(PAGE)
        request.finish()
        rig.settle()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.value().endswith(PAGE))
        self.assertEqual(rig.server.cache.entry_count, 1)


    def test_otherVariant(self) -> None:
        """
        A request that joined a fill whose answer varies to another variant
        asks the origin itself, that request timed for it.
        """
        rig = _Rig(self)
        first = rig.get(b"/varies", b"X-Variant: a")
        second = rig.get(b"/varies", b"X-Variant: b")
        self.assertEqual(len(rig.origin.waiting), 1)
        fill = second.protocol._channel._relay
        rig.origin.waiting.pop().finish()
        rig.settle()
        self.assertTrue(first.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(len(rig.origin.waiting), 1)
        rig.clock.advance(2)
        rig.origin.waiting.pop().finish()
        rig.settle()
        self.assertIn(b"fwd=uri-miss; detail=vary", second.value())
        self.assertEqual(rig.observed, [0.0, 2.0])
        self.assertEqual(fill.upstream, 2.0)


    def test_noCoroutineDeferred(self) -> None:
        """
        A fill of a page stored in memory, and its answer on the channel,
        make no L{Deferred} of a coroutine: storing it runs at once.
        """
        rig = _Rig(self)
        made: List[Any] = []
        fromCoroutine = Deferred.fromCoroutine

        def counting(coroutine: Any) -> Any:
            made.append(coroutine.cr_code.co_qualname)
            return fromCoroutine(coroutine)

        self.patch(Deferred, "fromCoroutine", staticmethod(counting))
        self.assertTrue(rig.get(b"/plain").value().endswith(PAGE))
        self.assertEqual(rig.server.cache.entry_count, 1)
        self.assertEqual(made, [])


class DecodeTests(SynchronousTestCase):
    """
    A stored body is decoded only when it has a content coding.
    """

    def setUp(self) -> None:
        """
        A rig whose fills' decodings are counted.
        """
        self.rig = _Rig(self)
        self.decoded: List[Any] = []
        codec = self.rig.server.filler._codec
        decode = codec.decode

        def counting(body: bytes, coding: Any) -> Any:
            self.decoded.append(coding)
            return decode(body, coding)

        self.patch(codec, "decode", counting)

    def test_identity(self) -> None:
        """
        A body without C{Content-Encoding} is stored as it came, not handed
        to the codec.
        """
        transport = self.rig.get(b"/plain")
        self.assertTrue(transport.value().endswith(PAGE))
        self.assertEqual(self.decoded, [])

    def test_gzip(self) -> None:
        """
        A gzip body is decoded before it is stored.
        """
        self.rig.get(b"/gzip")
        self.assertEqual(self.decoded, [b"gzip"])
        self.assertTrue(self.rig.get(b"/gzip").value().endswith(PAGE))
