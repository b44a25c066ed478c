"""
Tests for L{phantom_frame.proxy.pool.OriginClient.relay} and
L{phantom_frame.ops.timing.TimingClient.relay}: answers whose receiver is
told of their end itself, without a L{Deferred} per request; and how a
connection tells its exchange whether more of an answer is to come.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from phantom_frame.ops.timing import TimingClient
from phantom_frame.proxy.client import (
    IOriginClient,
    IRelayingClient,
    IRelayReceiver,
    OriginTimeout,
    ResponseHead,
    StalledBody,
)
from phantom_frame.proxy.connection import OriginConnection

from tests.proxy.origins import OK, TIMEOUT, Recorder, make


@implementer(IRelayReceiver)
class Ending(Recorder):
    """
    A L{Recorder} told of the end of its answer, noting then what the pool
    held.

    @ivar ends: C{("done", head)} or C{("failed", failure)}, in order.
    @ivar idle_at_end: the pool's idle connections when the end was told.
    """

    timing: Any = None

    def __init__(self, pool: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.ends: List[Tuple[str, Any]] = []
        self.idle_at_end: Optional[int] = None
        self._pool = pool

    def responseDone(self, head: ResponseHead) -> None:
        """
        Note the end, and the pool's idle connections.
        """
        self.ends.append(("done", head))
        if self._pool is not None:
            self.idle_at_end = self._pool.idle

    def responseFailed(self, failure: Failure) -> None:
        """
        Note the failure.
        """
        self.ends.append(("failed", failure))


class RelayTests(SynchronousTestCase):
    """
    L{OriginClient.relay} tells the receiver of the end; L{request} keeps
    its L{Deferred}.
    """

    def test_interface(self) -> None:
        """
        The pool's clients and the timing client are L{IRelayingClient}s;
        the relay's receiver is an L{IRelayReceiver}.
        """
        clock, endpoint, pool, client = make(self)
        verifyObject(IRelayingClient, client)
        verifyObject(IRelayingClient, TimingClient(client, clock, lambda s: None, lambda: None))
        verifyObject(IRelayReceiver, Ending())

    def test_done(self) -> None:
        """
        A complete answer is told with C{responseDone(head)}, once, after
        the connection went back to the pool; no L{Deferred} is made.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Ending(pool)
        request = client.relay(b"GET", b"/", [], receiver)
        self.assertNotIsInstance(request, Deferred)
        self.assertIsNone(request.deferred)
        endpoint.wires[0].answer(OK)
        self.assertEqual([(kind, head.status) for kind, head in receiver.ends], [("done", 200)])
        self.assertIs(receiver.ends[0][1], receiver.head)
        self.assertEqual(receiver.events[1:], [("body", b"hello")])
        self.assertEqual((receiver.idle_at_end, clock.getDelayedCalls() != []), (1, True))
        request.cancel()
        self.assertEqual(len(receiver.ends), 1)

    def test_reused(self) -> None:
        """
        The connection a relayed answer left in the pool carries the next
        request.
        """
        clock, endpoint, pool, client = make(self)
        for _ in range(2):
            receiver = Ending()
            client.relay(b"GET", b"/", [], receiver)
            endpoint.wires[0].answer(OK)
            self.assertEqual([kind for kind, _ in receiver.ends], ["done"])
        self.assertEqual((len(endpoint.wires), pool.reused), (1, 1))

    def test_timeout(self) -> None:
        """
        No head within the timeout: C{responseFailed} with
        L{OriginTimeout}; a stall inside the body: L{StalledBody}.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Ending()
        client.relay(b"GET", b"/", [], receiver)
        clock.advance(TIMEOUT)
        self.assertEqual(len(receiver.ends), 1)
        receiver.ends[0][1].trap(OriginTimeout)
        receiver = Ending()
        client.relay(b"GET", b"/", [], receiver)
        endpoint.wires[-1].answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        clock.advance(TIMEOUT)
        self.assertEqual([kind for kind, _ in receiver.ends], ["failed"])
        receiver.ends[0][1].trap(StalledBody)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """
        Cancelling what C{relay} returned closes the connection and tells
        the receiver C{CancelledError}, once.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Ending()
        request = client.relay(b"GET", b"/", [], receiver)
        request.cancel()
        request.cancel()
        self.assertEqual(len(receiver.ends), 1)
        receiver.ends[0][1].trap(CancelledError)
        self.assertTrue(endpoint.wires[0].transport.disconnected)
        self.assertEqual((pool.idle, clock.getDelayedCalls()), (0, []))

    def test_stop_producing(self) -> None:
        """
        Stopping the body's producer abandons the answer as cancelling
        does.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Ending()
        client.relay(b"GET", b"/", [], receiver)
        endpoint.wires[0].answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        receiver.producer.stopProducing()
        self.assertEqual([kind for kind, _ in receiver.ends], ["failed"])
        receiver.ends[0][1].trap(CancelledError)
        self.assertTrue(endpoint.wires[0].transport.disconnected)

    def test_receiver_raises(self) -> None:
        """
        A receiver whose C{responseDone} raises leaves the connection in
        the pool; the error is logged.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Ending()

        def broken(head: ResponseHead) -> None:
            raise ZeroDivisionError()

        receiver.responseDone = broken  # type: ignore[method-assign]
        client.relay(b"GET", b"/", [], receiver)
        endpoint.wires[0].answer(OK)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual((pool.idle, endpoint.wires[0].transport.disconnected), (1, False))

    def test_request_unchanged(self) -> None:
        """
        L{request} still returns a L{Deferred} firing with the head; its
        receiver is not told of the end.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Ending()
        d = client.request(b"GET", b"/", [], receiver)
        endpoint.wires[0].answer(OK)
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(receiver.ends, [])


@implementer(IOriginClient)
class _Requesting:
    """
    An L{IOriginClient} with C{request} alone, whose requests wait.

    @ivar asked: the receivers and L{Deferred}s of the requests.
    """

    def __init__(self) -> None:
        self.asked: List[Tuple[Any, Deferred]] = []

    def request(self, method: bytes, target: bytes, headers: Any, receiver: Any, body: Any = None) -> Deferred:
        """
        @return: a L{Deferred} fired by the test.
        """
        d: Deferred = Deferred()
        self.asked.append((receiver, d))
        return d


class TimingRelayTests(SynchronousTestCase):
    """
    L{TimingClient.relay} leaves the timing to the receiver.
    """

    def timing(self, client: Any) -> Tuple[TimingClient, List[float], List[None]]:
        """
        @return: a timing client over C{client}, and the durations and
            failures it records.
        """
        observed: List[float] = []
        failed: List[None] = []
        clock = make(self)[0]
        return TimingClient(client, clock, observed.append, lambda: failed.append(None)), observed, failed

    def test_unwrapped(self) -> None:
        """
        The wrapped client's relay gets the receiver itself, whose
        C{timing} is the timing client; L{TimingClient.timed} records what
        the receiver timed.
        """
        clock, endpoint, pool, client = make(self)
        timing, observed, failed = self.timing(client)
        receiver = Ending()
        timing.relay(b"GET", b"/", [], receiver)
        self.assertIs(receiver.timing, timing)
        endpoint.wires[0].answer(OK)
        self.assertEqual([kind for kind, _ in receiver.ends], ["done"])
        self.assertEqual(endpoint.wires[0].protocol.served, 1)
        self.assertEqual((observed, failed), ([], []))
        timing.timed(0.25, False)
        timing.timed(0.5, True)
        self.assertEqual((observed, failed), ([0.25, 0.5], [None]))

    def test_requesting(self) -> None:
        """
        Over a client without C{relay}, the request's L{Deferred} tells the
        receiver of the end; cancelling what C{relay} returned cancels it.
        """
        inner = _Requesting()
        timing, observed, failed = self.timing(inner)
        receiver = Ending()
        timing.relay(b"GET", b"/", [], receiver)
        self.assertIs(inner.asked[0][0], receiver)
        head = object()
        inner.asked[0][1].callback(head)
        self.assertEqual(receiver.ends, [("done", head)])
        receiver = Ending()
        timing.relay(b"GET", b"/", [], receiver).cancel()
        self.assertEqual([kind for kind, _ in receiver.ends], ["failed"])
        receiver.ends[0][1].trap(CancelledError)


class _Exchange:
    """
    What a connection needs of an exchange, noting what it is told.
    """

    method = b"GET"

    def __init__(self) -> None:
        self.receiver = Recorder()
        self.waits: List[bool] = []
        self.completed_with: Optional[bool] = None

    def answered(self, head: ResponseHead, waits: bool = True) -> None:
        """
        Note whether more of the answer is to come.
        """
        self.waits.append(waits)
        self.receiver.headReceived(head, self)

    def progress(self) -> None:
        """
        Bytes moved.
        """

    def completed(self, connection: Any, reusable: bool) -> None:
        """
        Note the end.
        """
        self.completed_with = reusable


class WaitsTests(SynchronousTestCase):
    """
    A connection tells its exchange, with the head, whether more of the
    answer is to come: no body timeout is needed for a body that came
    whole with its head.
    """

    def answer(self, data: bytes) -> _Exchange:
        """
        @return: the exchange of a connection that read C{data}.
        """
        connection = OriginConnection(lambda c: None)
        connection.makeConnection(StringTransport())
        exchange = _Exchange()
        connection.send(exchange, b"GET / HTTP/1.1\r\n\r\n")
        connection.dataReceived(data)
        return exchange

    def test_whole(self) -> None:
        """
        A body that came whole with its head, or no body: nothing waits.
        """
        self.assertEqual(self.answer(OK).waits, [False])
        self.assertEqual(self.answer(b"HTTP/1.1 204 No Content\r\n\r\n").waits, [False])
        self.assertEqual(self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").waits, [False])

    def test_more(self) -> None:
        """
        Part of a body, a chunked or a close-delimited one: more is to
        come.
        """
        exchange = self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        self.assertEqual((exchange.waits, exchange.completed_with), ([True], None))
        self.assertEqual(self.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").waits, [True])
        self.assertEqual(self.answer(b"HTTP/1.0 200 OK\r\n\r\nsome").waits, [True])
