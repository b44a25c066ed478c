"""
Tests for how L{phantom_frame.proxy.origin.Origin} asks a relaying client
(the pool's, or a timing client over it): the L{OriginResponse} is told of
the end by the client itself, no L{Deferred} per request, and times the
request for a timing client as the client's own receiver would.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from phantom_frame.http.routing import current_request
from phantom_frame.ops.timing import TimingClient
from phantom_frame.proxy.body import BodyRelay, UpstreamError
from phantom_frame.proxy.origin import Origin
from tests.memory import Holding, MemoryOrigin


class _Site(Holding):
    """
    C{/slow} answers when told (held in C{waiting}); any other path at once.
    """

    def render_GET(self, request: Any) -> Any:
        """
        The path, as the body.
        """
        if request.path == b"/slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        return b"page " + request.path


class _Asked:
    """
    A client that notes which of its wrapped client's methods it was asked
    with (only C{request} when C{relaying} is false).

    @ivar asked: C{"request"} or C{"relay"}, per request.
    """

    def __init__(self, client: Any, relaying: bool) -> None:
        self._client = client
        self.asked: List[str] = []
        if relaying:
            self.relay = self._relay

    def request(self, *args: Any) -> Any:
        self.asked.append("request")
        return self._client.request(*args)

    def _relay(self, *args: Any) -> Any:
        self.asked.append("relay")
        return self._client.relay(*args)


class RelayedTests(SynchronousTestCase):
    """
    L{Origin.request} over a relaying client, and over one that is not.
    """

    def setUp(self) -> None:
        """
        An origin in memory, reached through a timing client over the
        pool's (relaying) client.
        """
        self.clock = Clock()
        self.site = _Site()
        self.memory = MemoryOrigin(self.site, self.clock)
        self.observed: List[float] = []
        self.failures: List[None] = []

    def origin(self, relaying: bool = True) -> Any:
        """
        @return: an L{Origin} over C{self.asked}, a client noting how it is
            asked, under a L{TimingClient}.
        """
        self.asked = _Asked(self.memory.client("http://origin.test"), relaying)
        timing = TimingClient(self.asked, self.clock, self.observed.append, lambda: self.failures.append(None))
        return Origin("http://origin.test", timing, self.clock, 30)

    def read(self, origin: Any, path: bytes) -> Any:
        """
        @return: the response to a GET of C{path} and its body relay (whole).
        """
        response = self.successResultOf(origin.request(b"GET", path, []))
        relay = BodyRelay(self.clock, None, 1 << 20)
        response.deliverBody(relay)
        self.memory.flush()
        self.assertTrue(self.successResultOf(relay.ready()))
        return response, relay

    def test_relayed(self) -> None:
        """
        The relaying client is asked to relay: the response is its
        receiver, told of the end; its body is read as before, and the
        request timed once.
        """
        origin = self.origin()
        response, relay = self.read(origin, b"/a")
        self.assertEqual((self.asked.asked, response.code, relay.collected()), (["relay"], 200, b"page /a"))
        self.assertEqual((self.observed, self.failures), ([0.0], []))

    def test_notRelaying(self) -> None:
        """
        A client that cannot relay is asked for the request's L{Deferred}:
        the same response, timed the same way.
        """
        origin = self.origin(relaying=False)
        response, relay = self.read(origin, b"/a")
        self.assertEqual((self.asked.asked, response.code, relay.collected()), (["request"], 200, b"page /a"))
        self.assertEqual((self.observed, self.failures), ([0.0], []))

    def test_timedForRequest(self) -> None:
        """
        The time to the head is added to the client request being answered
        when the request was made.
        """

        class Answered:
            phantomUpstream = None

        answered = Answered()
        origin = self.origin()
        token = current_request.set(answered)
        try:
            d = origin.request(b"GET", b"/slow", [])
        finally:
            current_request.reset(token)
        self.clock.advance(3)
        self.site.waiting.pop().finish()
        self.memory.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual((self.observed, answered.phantomUpstream), ([3.0], 3.0))

    def test_unreachable(self) -> None:
        """
        An origin that refuses the connection: the request fails with an
        L{UpstreamError}, timed as failed.
        """
        self.memory.down = True
        origin = self.origin()
        self.failureResultOf(origin.request(b"GET", b"/a", []), UpstreamError)
        self.assertEqual((self.observed, len(self.failures)), ([0.0], 1))

    def test_cancelled(self) -> None:
        """
        Cancelling the request before its head abandons the relayed
        exchange: it fails with C{CancelledError}, timed as failed.
        """
        origin = self.origin()
        d = origin.request(b"GET", b"/slow", [])
        self.memory.flush()
        self.clock.advance(2)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((self.observed, len(self.failures)), ([2.0], 1))
        self.assertEqual(self.memory.pool.idle, 0)
