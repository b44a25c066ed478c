"""
Tests for L{phantom_frame.proxy.client}: the interfaces, the errors that
tell failures apart, back-pressure and cancellation as a receiver sees
them, and L{RequestBody}; in memory, through the pooling client.
"""

from __future__ import annotations

from typing import Optional

from OpenSSL import SSL
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from phantom_frame.proxy.client import (
    BadAnswer,
    BrokenAnswer,
    Collector,
    IOriginClient,
    IResponseReceiver,
    LengthMismatch,
    MalformedBody,
    MalformedHead,
    NoAnswer,
    OriginTimeout,
    OriginUnreachable,
    RequestBody,
    TruncatedBody,
)

from tests.proxy.origins import CHUNKED, OK, TIMEOUT, Recorder, Source, make


class InterfaceTests(SynchronousTestCase):
    """
    The client's objects provide the interfaces they claim.
    """

    def test_provides(self) -> None:
        """
        The client is an L{IOriginClient}, L{Collector} an
        L{IResponseReceiver}, L{RequestBody} an L{IConsumer} and an
        L{IPushProducer}, and the producer a receiver gets an
        L{IPushProducer}.
        """
        clock, endpoint, pool, client = make(self)
        self.assertTrue(verifyObject(IOriginClient, client))
        self.assertTrue(verifyObject(IResponseReceiver, Collector()))
        self.assertTrue(verifyObject(IConsumer, RequestBody()))
        self.assertTrue(verifyObject(IPushProducer, RequestBody()))
        receiver = Recorder()
        client.request(b"GET", b"/", [], receiver)
        endpoint.wires[0].answer(OK)
        self.assertTrue(verifyObject(IPushProducer, receiver.producer))


class ErrorTests(SynchronousTestCase):
    """
    Failures are distinguished and never reported as a complete answer.
    """

    def answer(self, *pieces: bytes, lose: Optional[Exception] = None) -> Failure:
        """
        @return: the failure of a GET answered with C{pieces}, then the
            connection lost for C{lose}; its connection must be gone.
        """
        clock, endpoint, pool, client = make(self)
        d = client.request(b"GET", b"/", [], Recorder())
        endpoint.wires[0].answer(*pieces)
        if lose is not None:
            endpoint.wires[0].lose(lose)
        failure = self.failureResultOf(d)
        self.assertEqual(pool.idle, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        return failure

    def test_no_answer(self) -> None:
        """
        A connection closed before any answer or inside the head fails with
        L{NoAnswer}, a L{BadAnswer} (a gateway's 502).
        """
        for pieces in [(), (b"HTTP/1.1 200 OK\r\nContent-Le",)]:
            failure = self.answer(*pieces, lose=ConnectionDone())
            failure.trap(NoAnswer)
            self.assertIsInstance(failure.value, BadAnswer)

    def test_length_mismatch(self) -> None:
        """
        A body shorter than its C{Content-Length} fails with
        L{LengthMismatch} (a L{BrokenAnswer}), saying how much came.
        """
        failure = self.answer(OK[:-2], lose=ConnectionDone())
        failure.trap(LengthMismatch)
        self.assertIsInstance(failure.value, BrokenAnswer)
        self.assertEqual((failure.value.expected, failure.value.received), (5, 3))

    def test_truncated_chunks(self) -> None:
        """
        A chunked body cut anywhere before its last chunk fails with
        L{TruncatedBody}.
        """
        for end in [len(CHUNKED) - 30, len(CHUNKED) - 3]:
            self.answer(CHUNKED[:end], lose=ConnectionDone()).trap(TruncatedBody)

    def test_malformed_chunks(self) -> None:
        """
        A bad chunk size, a chunk without its CRLF, an over-long size line or
        over-long trailers fail with L{MalformedBody} and close the
        connection.
        """
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for body in [
            b"zz\r\n",
            b"-1\r\n",
            b"0x5\r\n",
            b"\r\n",
            b"1" * 16 + b"\r\n",
            b"3\r\nabcX\r\n",
            b"1;" + b"e" * 5000,
            b"0\r\n" + b"X-T: 1\r\n" * 9000,
        ]:
            self.answer(head + body).trap(MalformedBody)

    def test_malformed_head(self) -> None:
        """
        A head that is no HTTP/1.x, or grows past 64 KB without ending,
        fails with L{MalformedHead}.
        """
        self.answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").trap(MalformedHead)
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n").trap(MalformedHead)
        self.answer(b"HTTP/1.1 200 OK\r\n", b"X-Big: " + b"a" * 70000).trap(MalformedHead)

    def test_refused(self) -> None:
        """
        A refused or unresolvable origin fails with L{OriginUnreachable}.
        """
        for error in [ConnectionRefusedError(), DNSLookupError("origin.example")]:
            clock, endpoint, pool, client = make(self)
            endpoint.refuse = error
            failure = self.failureResultOf(client.request(b"GET", b"/", [], Recorder()), OriginUnreachable)
            self.assertIn("origin.example:8080", str(failure.value))
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_tls_failure(self) -> None:
        """
        A connection lost to a TLS error before any answer fails with
        L{OriginUnreachable}.
        """
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.answer(lose=error).trap(OriginUnreachable)

    def test_receiver_error(self) -> None:
        """
        An exception raised by the receiver fails the request with it and
        closes the connection.
        """

        class Boom(Exception):
            pass

        class Fragile(Recorder):
            def bodyReceived(self, data: bytes) -> None:
                raise Boom()

        clock, endpoint, pool, client = make(self)
        d = client.request(b"GET", b"/", [], Fragile())
        endpoint.wires[0].answer(OK)
        self.failureResultOf(d, Boom)
        self.assertTrue(endpoint.wires[0].transport.disconnected)
        self.assertEqual(pool.idle, 0)


class FlowTests(SynchronousTestCase):
    """
    Back-pressure from the receiver, and cancellation.
    """

    def test_pause(self) -> None:
        """
        Pausing the producer stops reading the origin connection, and what
        already came (the rest of a read) waits until the receiver resumes.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Recorder(pause_after=4)
        d = client.request(b"GET", b"/", [], receiver)
        wire = endpoint.wires[0]
        wire.answer(CHUNKED)
        self.assertEqual(wire.transport.producerState, "paused")
        self.assertEqual(receiver.body(), b"Wiki")
        self.assertNoResult(d)
        receiver.producer.resumeProducing()
        self.assertEqual(wire.transport.producerState, "producing")
        self.assertEqual(receiver.body(), b"Wikipedia in\r\n\r\nchunks.")
        self.successResultOf(d)
        self.assertEqual(pool.idle, 1)

    def test_paused_then_closed(self) -> None:
        """
        An origin that sent the whole body and closed while the receiver
        held it back has not cut the body short: it is delivered on resume.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Recorder(pause_after=1)
        d = client.request(b"GET", b"/", [], receiver)
        wire = endpoint.wires[0]
        wire.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n2\r\nbc\r\n0\r\n\r\n")
        wire.lose()
        self.assertNoResult(d)
        receiver.producer.resumeProducing()
        self.successResultOf(d)
        self.assertEqual((receiver.body(), pool.idle), (b"abc", 0))

    def test_stop(self) -> None:
        """
        Stopping the producer abandons the answer: the connection is
        closed, the request fails with L{CancelledError}.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Recorder()
        d = client.request(b"GET", b"/", [], receiver)
        endpoint.wires[0].answer(OK[:-3])
        receiver.producer.stopProducing()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(endpoint.wires[0].transport.disconnected)
        endpoint.wires[0].answer(b"llo")
        self.assertEqual((receiver.body(), pool.idle), (b"he", 0))

    def test_cancel(self) -> None:
        """
        Cancelling the request (the client went away) while waiting for the
        head or inside the body closes the connection, never kept; later
        bytes are not delivered; no timer is left.
        """
        for sent in [b"", OK[:-3]]:
            clock, endpoint, pool, client = make(self)
            receiver = Recorder()
            d = client.request(b"GET", b"/", [], receiver)
            wire = endpoint.wires[0]
            wire.answer(sent)
            d.cancel()
            self.failureResultOf(d, CancelledError)
            self.assertTrue(wire.transport.disconnected)
            wire.answer(OK[len(sent):])
            wire.lose()
            self.assertEqual(receiver.body(), sent[-2:] if sent else b"")
            self.assertEqual((pool.idle, clock.getDelayedCalls()), (0, []))

    def test_cancel_connecting(self) -> None:
        """
        Cancelling the request while connecting cancels the attempt.
        """
        clock, endpoint, pool, client = make(self)
        endpoint.hold = True
        d = client.request(b"GET", b"/", [], Recorder())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((endpoint.cancelled, clock.getDelayedCalls()), (1, []))


class RequestBodyTests(SynchronousTestCase):
    """
    L{RequestBody}: request bodies streamed as they arrive.
    """

    def test_length(self) -> None:
        """
        A body of known length goes with C{Content-Length}, each write as it
        comes; once finished it no longer produces for the connection.
        """
        clock, endpoint, pool, client = make(self)
        body = RequestBody(5)
        d = client.request(b"PUT", b"/", [], Recorder(), body)
        wire = endpoint.wires[0]
        self.assertTrue(wire.sent().endswith(b"\r\nContent-Length: 5\r\n\r\n"))
        self.assertIs(wire.transport.producer, body)
        body.write(b"ab")
        self.assertEqual(wire.sent(), b"ab")
        body.write(b"cde")
        body.finish()
        self.assertEqual(wire.sent(), b"cde")
        self.assertIsNone(wire.transport.producer)
        wire.answer(OK)
        self.successResultOf(d)
        self.assertEqual(pool.idle, 1)

    def test_chunked(self) -> None:
        """
        A body of unknown length is sent chunked; L{RequestBody.finish}
        sends the last chunk.
        """
        clock, endpoint, pool, client = make(self)
        body = RequestBody()
        client.request(b"POST", b"/", [], Recorder(), body)
        wire = endpoint.wires[0]
        self.assertTrue(wire.sent().endswith(b"\r\nTransfer-Encoding: chunked\r\n\r\n"))
        body.write(b"a" * 26)
        body.write(b"")
        body.finish()
        self.assertEqual(wire.sent(), b"1a\r\n" + b"a" * 26 + b"\r\n0\r\n\r\n")

    def test_before_connection(self) -> None:
        """
        What is written before the connection is made waits, and is sent
        after the head; past C{limit} bytes the caller's producer is paused
        until then.
        """
        clock, endpoint, pool, client = make(self)
        endpoint.hold = True
        source = Source()
        body = RequestBody(limit=4)
        body.registerProducer(source, True)
        client.request(b"POST", b"/", [], Recorder(), body)
        body.write(b"abc")
        self.assertEqual(source.state, "producing")
        body.write(b"de")
        self.assertEqual(source.state, "paused")
        wire = endpoint.complete()
        self.assertTrue(wire.sent().endswith(b"chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"))
        self.assertEqual(source.state, "producing")

    def test_back_pressure(self) -> None:
        """
        The caller's producer is paused while the origin connection takes
        no more, and resumed when it does.
        """
        clock, endpoint, pool, client = make(self)
        source = Source()
        body = RequestBody(10)
        body.registerProducer(source, True)
        client.request(b"POST", b"/", [], Recorder(), body)
        transport = endpoint.wires[0].transport
        transport.producer.pauseProducing()
        self.assertEqual(source.state, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(source.state, "producing")
        self.assertRaises(TypeError, body.registerProducer, source, False)

    def test_progress(self) -> None:
        """
        A body still arriving keeps the request from timing out: each write
        restarts the timeout for the head.
        """
        clock, endpoint, pool, client = make(self)
        body = RequestBody()
        d = client.request(b"POST", b"/", [], Recorder(), body)
        for _ in range(3):
            clock.advance(TIMEOUT - 1)
            body.write(b"x")
        self.assertNoResult(d)
        body.finish()
        clock.advance(TIMEOUT)
        self.failureResultOf(d, OriginTimeout)

    def test_misuse(self) -> None:
        """
        Writing past the length, finishing short, writing after finishing
        and using a body for two requests raise L{ValueError}.
        """
        body = RequestBody(3)
        self.assertRaises(ValueError, body.write, b"abcd")
        short = RequestBody(3)
        short.write(b"ab")
        self.assertRaises(ValueError, short.finish)
        done = RequestBody()
        done.finish()
        self.assertRaises(ValueError, done.write, b"a")
        self.assertRaises(ValueError, RequestBody, -1)
        clock, endpoint, pool, client = make(self)
        once = RequestBody()
        client.request(b"POST", b"/", [], Recorder(), once)
        self.assertRaises(ValueError, client.request, b"POST", b"/", [], Recorder(), once)

    def test_answered_early(self) -> None:
        """
        An origin may answer before the body is all sent: the answer
        completes, the connection is closed (not kept), later writes are
        dropped and the caller's producer is not left paused.
        """
        clock, endpoint, pool, client = make(self)
        source = Source()
        body = RequestBody(100)
        body.registerProducer(source, True)
        d = client.request(b"POST", b"/", [], Recorder(), body)
        wire = endpoint.wires[0]
        wire.sent()
        wire.transport.producer.pauseProducing()
        wire.answer(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d).status, 413)
        self.assertTrue(wire.transport.disconnecting)
        self.assertEqual((pool.idle, source.state), (0, "producing"))
        body.write(b"more")
        self.assertEqual(wire.sent(), b"")
