"""
Tests for L{phantom_frame.http.guard}: what the proxy listener answers to
malformed, oversized and slow request heads, on the fast and the stock
path alike, and that none of them reaches the origin.
"""

from __future__ import annotations

from typing import Any, List

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.http.limits import ClientLimits
from tests.http.rig import Rig, answers, assert_refused, request


class _Both:
    """
    Runs each check on a site with the fast path and one without.
    """

    def rigs(self, **kwargs: Any) -> List[Rig]:
        """
        @return: a fast-path rig and a stock-path rig.
        """
        return [Rig(self, fast=True, **kwargs), Rig(self, fast=False, **kwargs)]

    def refuses(self, data: bytes, code: int, pieces: int = 1, **kwargs: Any) -> None:
        """
        Both rigs answer C{data} with a C{code} refusal at once, close, and
        send the origin nothing.
        """
        for rig in self.rigs(**kwargs):
            written, closing = rig.exchange(data, pieces)
            assert_refused(self, written, closing, code)
            self.assertEqual(rig.origin.received, [])


class FramingTests(_Both, SynchronousTestCase):
    """
    A body length that does not fit or is ambiguous gets 400 at once.
    """

    def test_contentLengthTooBig(self) -> None:
        """
        A C{Content-Length} over 63 bits gets 400 at once (twisted.web alone
        waits for the body until the idle timeout).
        """
        self.refuses(request(content_length="18446744073709551621"), 400)

    def test_contentLengthOfManyDigits(self) -> None:
        """
        A C{Content-Length} of thousands of digits gets 400 (twisted.web
        alone raises from C{int()}); leading zeros are only zeros.
        """
        self.refuses(request("/x", "POST", content_length="1" * 5000), 400)
        rig = Rig(self)
        written, closing = rig.exchange(request("/x", "POST", content_length="0" * 5000 + "2") + b"ok")
        self.assertEqual(answers(written)[0][0], 200)
        self.assertEqual(rig.origin.received[0][3], b"ok")

    def test_chunkSizeTooBig(self) -> None:
        """
        A chunk size over 63 bits gets 400 at once.
        """
        head = request("/x", "POST", transfer_encoding="chunked")
        self.refuses(head + b"ffffffffffffffffffffff\r\nabc", 400)

    def test_contentLengthNotDecimal(self) -> None:
        """
        A C{Content-Length} that is not plain decimal digits gets 400.
        """
        for value in ("+5", "-1", "0x10", "5, 5", "1e3", "5 5", ""):
            self.refuses(request("/x", "POST", content_length=value) + b"hello", 400)

    def test_twoContentLengths(self) -> None:
        """
        Two C{Content-Length} headers, different or not, get 400.
        """
        for second in ("4", "3"):
            data = request("/x", "POST", content_length="3").replace(
                b"\r\n\r\n", b"\r\nContent-Length: " + second.encode() + b"\r\n\r\n"
            )
            self.refuses(data + b"abcd", 400)

    def test_contentLengthWithTransferEncoding(self) -> None:
        """
        C{Content-Length} with C{Transfer-Encoding}, in either order, gets
        400; so does C{Transfer-Encoding} in HTTP/1.0.
        """
        self.refuses(request("/x", "POST", content_length="3", transfer_encoding="chunked") + b"0\r\n\r\n", 400)
        self.refuses(request("/x", "POST", transfer_encoding="chunked", content_length="3") + b"0\r\n\r\n", 400)
        self.refuses(request("/x", "POST", transfer_encoding="identity", content_length="3") + b"abc", 400)
        old = b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        self.refuses(old, 400)

    def test_unknownTransferCoding(self) -> None:
        """
        A transfer coding other than C{chunked} gets 501.
        """
        self.refuses(request("/x", "POST", transfer_encoding="gzip, chunked") + b"0\r\n\r\n", 501)
        self.refuses(request("/x", "POST", transfer_encoding="identity") + b"0\r\n\r\n", 501)

    def test_chunkedFraming(self) -> None:
        """
        A chunked body is read; bare LFs in its framing get 400 at once
        rather than a wait.
        """
        head = request("/x", "POST", transfer_encoding="chunked")
        rig = Rig(self)
        written, _ = rig.exchange(head + b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")
        self.assertEqual(answers(written)[0][0], 200)
        self.assertEqual(rig.origin.received[0][3], b"abcde")
        for body in (b"3\nabc\r\n0\r\n\r\n", b"3\r\nabc\n", b"3\r\nabc\r\n0\r\n\n", b"\n"):
            self.refuses(head + body, 400)


class LineEndingTests(_Both, SynchronousTestCase):
    """
    Bare LF line endings are accepted (RFC 9112 §2.2); a bare CR is not.
    """

    def test_bareLF(self) -> None:
        """
        A head with LF line endings, or a mix, is answered at once, as the
        CRLF one is.
        """
        for rig in self.rigs():
            for data in (
                b"GET /lf HTTP/1.1\nHost: proxy.test\n\n",
                b"GET /lf HTTP/1.1\r\nHost: proxy.test\nAccept: */*\r\n\n",
            ):
                written, closing = rig.exchange(data)
                (answer,) = answers(written)
                self.assertEqual(answer[0], 200)
                self.assertFalse(closing)
            self.assertEqual([r[1] for r in rig.origin.received], [b"/lf"])

    def test_bareLFPipelined(self) -> None:
        """
        Pipelined LF heads are answered in order.
        """
        for rig in self.rigs():
            data = b"GET /a HTTP/1.1\nHost: proxy.test\n\nGET /b HTTP/1.1\nHost: proxy.test\n\n"
            written, _ = rig.exchange(data)
            self.assertEqual([a[2][-2:] for a in answers(written)], [b"/a", b"/b"])

    def test_bareLFHit(self) -> None:
        """
        A hit asked for with LF line endings gets the answer a CRLF one gets;
        the fast path leaves it to the stock path.
        """
        rig = Rig(self)
        rig.exchange(request("/hit"))
        crlf, _ = rig.exchange(request("/hit"))
        self.assertEqual(rig.answered(), 1)
        lf, _ = rig.exchange(b"GET /hit HTTP/1.1\nHost: proxy.test\n\n")
        self.assertEqual(rig.answered(), 1)
        ((code1, headers1, body1),) = answers(crlf)
        ((code2, headers2, body2),) = answers(lf)
        self.assertEqual((code1, body1, headers1[b"cache-status"]), (code2, body2, headers2[b"cache-status"]))
        self.assertEqual(len(rig.origin.received), 1)

    def test_bareCR(self) -> None:
        """
        A bare CR in the request line or a header line gets 400.
        """
        self.refuses(b"GET /page HTTP/1.1\r\nHost: proxy.test\rX-A: b\r\n\r\n", 400)
        self.refuses(b"GET /pa\rge HTTP/1.1\r\nHost: proxy.test\r\n\r\n", 400)
        self.refuses(b"GET /page HTTP/1.1\r\r\nHost: proxy.test\r\n\r\n", 400)


class HeadSizeTests(_Both, SynchronousTestCase):
    """
    The request line and the head are bounded by C{max_header_bytes}.
    """

    def test_longRequestLine(self) -> None:
        """
        A request line of 20 KB or 1 MB gets 414 as soon as it is over the
        limit, without waiting for its end.
        """
        self.refuses(request("/" + "a" * 20_000), 414)
        for rig in self.rigs():
            connection = rig.connect()
            written = connection.send(b"GET /" + b"a" * 1_000_000, pieces=100)
            assert_refused(self, written, connection.closing, 414)
            self.assertEqual(rig.origin.received, [])

    def test_longHeaderLine(self) -> None:
        """
        A header line of 20 KB or 1 MB gets 431.
        """
        self.refuses(request(x_big="b" * 20_000), 431)
        self.refuses(b"GET / HTTP/1.1\r\nHost: proxy.test\r\nX-Big: " + b"b" * 1_000_000, 431, pieces=100)

    def test_manyHeaders(self) -> None:
        """
        Header lines that add up past the limit get 431.
        """
        headers = {f"x_h{i}": "v" * 90 for i in range(200)}
        self.refuses(request(**headers), 431)

    def test_atTheLimit(self) -> None:
        """
        A head of exactly C{max_header_bytes} (line ends not counted) is
        answered; one byte more gets 431.
        """
        limits = ClientLimits(max_header_bytes=2048)
        base = b"GET /page HTTP/1.1" + b"Host: proxy.test" + b"X-Pad: "
        pad = "p" * (2048 - len(base))
        for rig in self.rigs(limits=limits):
            written, _ = rig.exchange(request(x_pad=pad))
            self.assertEqual(answers(written)[0][0], 200)
            written, closing = rig.exchange(request(x_pad=pad + "p"))
            assert_refused(self, written, closing, 431)
            self.assertEqual(len(rig.origin.received), 1)

    def test_fastPathWindow(self) -> None:
        """
        A hit whose head is over the limit is not taken by the fast path:
        it gets 431.
        """
        rig = Rig(self, limits=ClientLimits(max_header_bytes=1024))
        rig.exchange(request("/w"))
        written, closing = rig.exchange(request("/w", x_pad="p" * 1100))
        assert_refused(self, written, closing, 431)
        self.assertEqual(rig.answered(), 0)
        self.assertEqual(len(rig.origin.received), 1)


class BodyLimitTests(_Both, SynchronousTestCase):
    """
    Request bodies are bounded by C{max_request_body}.
    """

    def test_declaredTooLarge(self) -> None:
        """
        A GET declaring 100 MiB to a cached route gets 413 as soon as its
        head is read: no body byte is waited for.
        """
        for rig in self.rigs():
            rig.exchange(request("/cached"))
            written, closing = rig.exchange(request("/cached", content_length="104857600") + b"x" * 1000)
            assert_refused(self, written, closing, 413)
            self.assertEqual([r[1] for r in rig.origin.received], [b"/cached"])

    def test_declaredAtTheLimit(self) -> None:
        """
        A body of exactly C{max_request_body} bytes goes to the origin; one
        byte more gets 413.
        """
        limits = ClientLimits(max_request_body=100)
        for rig in self.rigs(limits=limits):
            written, _ = rig.exchange(request("/p", "POST", content_length="100") + b"b" * 100)
            self.assertEqual(answers(written)[0][0], 200)
            written, closing = rig.exchange(request("/p", "POST", content_length="101") + b"b" * 101)
            assert_refused(self, written, closing, 413)
            self.assertEqual([len(r[3]) for r in rig.origin.received], [100])

    def test_chunkedCut(self) -> None:
        """
        A chunked body is cut with 413 when a chunk would take it past the
        limit, before that chunk is read; one that fits goes through.
        """
        limits = ClientLimits(max_request_body=100)
        head = request("/c", "POST", transfer_encoding="chunked")
        self.refuses(head + b"3c\r\n" + b"a" * 60 + b"\r\n3c\r\n", 413, limits=limits)
        self.refuses(head + b"65\r\n", 413, limits=limits)
        rig = Rig(self, limits=limits)
        written, _ = rig.exchange(head + b"32\r\n" + b"a" * 50 + b"\r\n32\r\n" + b"b" * 50 + b"\r\n0\r\n\r\n")
        self.assertEqual(answers(written)[0][0], 200)
        self.assertEqual(len(rig.origin.received[0][3]), 100)


class HeadTimeoutTests(SynchronousTestCase):
    """
    A request head has C{client_header_timeout} seconds to arrive.
    """

    def test_slowloris(self) -> None:
        """
        A head sent a byte a second gets 408 and is closed when the timeout
        is reached; nothing is written before.
        """
        for fast in (True, False):
            rig = Rig(self, fast=fast)
            connection = rig.connect()
            data = request("/slow", x_pad="p" * 100)
            for second in range(29):
                self.assertEqual(connection.send(data[second : second + 1]), b"")
                rig.clock.advance(1)
            connection.send(data[29:30])
            self.assertFalse(connection.closing)
            rig.clock.advance(1)
            assert_refused(self, connection.take(), connection.closing, 408)
            self.assertEqual(rig.origin.received, [])

    def test_silentConnection(self) -> None:
        """
        A connection that sends nothing gets 408 when the timeout is
        reached, counted from the connection.
        """
        rig = Rig(self, limits=ClientLimits(client_header_timeout=5))
        connection = rig.connect()
        rig.clock.advance(4.9)
        self.assertFalse(connection.closing)
        rig.clock.advance(0.1)
        assert_refused(self, connection.take(), connection.closing, 408)
        self.assertEqual(rig.origin.received, [])

    def test_keepAlive(self) -> None:
        """
        After an answer, an idle connection is not timed out by it; the next
        head's timeout counts from its first byte, and a head that arrives in
        time is answered.
        """
        rig = Rig(self, limits=ClientLimits(client_header_timeout=5))
        connection = rig.connect()
        self.assertEqual(answers(connection.send(request("/k")))[0][0], 200)
        rig.clock.advance(20)
        self.assertFalse(connection.closing)
        data = request("/k")
        connection.send(data[:5])
        rig.clock.advance(4)
        self.assertEqual(answers(connection.send(data[5:]))[0][0], 200)
        rig.clock.advance(20)
        self.assertFalse(connection.closing)
        connection.send(b"G")
        rig.clock.advance(5)
        assert_refused(self, connection.take(), connection.closing, 408)
        self.assertEqual([r[1] for r in rig.origin.received], [b"/k"])

    def test_slowBody(self) -> None:
        """
        Once the head is whole, a slow body is not cut by the head timeout,
        while a head as slow is.
        """
        rig = Rig(self, limits=ClientLimits(client_header_timeout=5))
        connection = rig.connect()
        slow_head = rig.connect()
        connection.send(request("/b", "POST", content_length="3"))
        refused = slow_head.send(b"POST /b HTTP/1.1\r\n")
        for byte in (b"a", b"b"):
            rig.clock.advance(4)
            self.assertEqual(connection.send(byte), b"")
            refused += slow_head.send(b"X")
        rig.clock.advance(4)
        self.assertEqual(answers(connection.send(b"c"))[0][0], 200)
        self.assertEqual(rig.origin.received[0][3], b"abc")
        assert_refused(self, refused, slow_head.closing, 408)
        self.assertEqual(len(rig.origin.received), 1)

    def test_noTimerLeft(self) -> None:
        """
        A connection waiting for a head has a head timer on the site's
        clock; one that goes away leaves none behind.
        """
        rig = Rig(self)

        def timers() -> List[Any]:
            return [c for c in rig.clock.getDelayedCalls() if "_headTimedOut" in repr(c.func)]

        connection = rig.connect()
        connection.send(b"GET /")
        self.assertEqual(len(timers()), 1)
        connection.close()
        self.assertEqual(timers(), [])


class RefusalRecordTests(SynchronousTestCase):
    """
    Refusals are logged and counted like answered requests.
    """

    def test_logged(self) -> None:
        """
        A refused request gets an access-log line with its status and
        request line, and is counted in the site's metrics.
        """
        seen: List[tuple] = []

        class Metrics:
            def observe(self, server, method, code, result, duration):
                seen.append((server, method, code, result))

        rig = Rig(self)
        rig.site.metrics = Metrics()
        rig.site.access_log = True
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        rig.exchange(request("/r", host="bad host"))
        lines = [e for e in events if e.get("log_namespace") == "phantom_frame.access"]
        self.assertEqual(len(lines), 1)
        self.assertIn('"GET /r HTTP/1.1" 400 ', lines[0]["line"])
        self.assertEqual(seen, [(None, b"GET", 400, "none")])
