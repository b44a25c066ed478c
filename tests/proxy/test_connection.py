"""
Tests for L{phantom_frame.proxy.connection}: the wire functions
L{request_head} and L{parse_head}, and how a connection writes requests and
reads answers (framing, interim answers, splits), through the client over
memory connections.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.proxy.client import Collector, Framing, MalformedHead, TruncatedBody
from phantom_frame.proxy.connection import parse_head, request_head
from phantom_frame.proxy.pool import OriginPool

from tests.proxy.origins import CHUNKED, OK, MemoryEndpoint, Recorder, make


def head(*lines: bytes) -> bytes:
    """
    @return: a head of C{lines}, each ended with CRLF.
    """
    return b"".join(line + b"\r\n" for line in lines)


class RequestHeadTests(SynchronousTestCase):
    """
    L{request_head} writes an HTTP/1.1 request head as bytes.
    """

    def test_layout(self) -> None:
        """
        The request line, then C{Host}, then the fields in order (repeated
        ones kept, names as given), then the framing line and the empty line.
        """
        data, persistent = request_head(
            b"POST",
            b"/a?b=1",
            b"origin.example:8080",
            [(b"Accept", b"*/*"), (b"X-Tag", b"1"), (b"x-tag", b"2")],
            b"Content-Length: 3\r\n",
        )
        self.assertEqual(
            data,
            b"POST /a?b=1 HTTP/1.1\r\nHost: origin.example:8080\r\nAccept: */*\r\n"
            b"X-Tag: 1\r\nx-tag: 2\r\nContent-Length: 3\r\n\r\n",
        )
        self.assertTrue(persistent)

    def test_no_fields(self) -> None:
        """
        Without fields the head is the request line and C{Host}.
        """
        self.assertEqual(
            request_head(b"GET", b"/", b"o", []),
            (b"GET / HTTP/1.1\r\nHost: o\r\n\r\n", True),
        )

    def test_host_given(self) -> None:
        """
        A C{Host} among the fields is sent instead of the origin's.
        """
        data, _ = request_head(b"GET", b"/", b"origin", [(b"HOST", b"public.example")])
        self.assertEqual(data, b"GET / HTTP/1.1\r\nHOST: public.example\r\n\r\n")

    def test_connection_close(self) -> None:
        """
        A request with C{Connection: close} does not let the connection
        persist.
        """
        _, persistent = request_head(b"GET", b"/", b"o", [(b"Connection", b"Close")])
        self.assertFalse(persistent)

    def test_refused(self) -> None:
        """
        CR or LF in a field, a space in the target, and a framing field are
        refused with L{ValueError}: the client frames bodies itself.
        """
        for target, headers in [
            (b"/", [(b"X", b"a\r\nInjected: 1")]),
            (b"/", [(b"X", b"a\nb")]),
            (b"/", [(b"X", b"a\rb")]),
            (b"/", [(b"X\r\nY", b"a")]),
            (b"/a b", []),
            (b"/a\r\n", []),
            (b"/", [(b"Content-Length", b"3")]),
            (b"/", [(b"transfer-encoding", b"chunked")]),
        ]:
            self.assertRaises(ValueError, request_head, b"GET", target, b"o", headers)


class ParseHeadTests(SynchronousTestCase):
    """
    L{parse_head} reads a response head into a
    L{phantom_frame.proxy.client.ResponseHead}.
    """

    def test_fields(self) -> None:
        """
        Status, phrase and version are read; fields come in order with
        their names as sent, repeated ones kept, values without surrounding
        whitespace.
        """
        parsed = parse_head(
            head(
                b"HTTP/1.1 200 Very OK",
                b"Set-Cookie: a=1",
                b"content-type:text/html",
                b"Set-Cookie: \t b=2 \t",
                b"Empty:",
                b"Content-Length: 5",
            ),
            b"GET",
        )
        self.assertEqual(
            (parsed.version, parsed.status, parsed.phrase), (b"HTTP/1.1", 200, b"Very OK")
        )
        self.assertEqual(
            parsed.headers,
            [
                (b"Set-Cookie", b"a=1"),
                (b"content-type", b"text/html"),
                (b"Set-Cookie", b"b=2"),
                (b"Empty", b""),
                (b"Content-Length", b"5"),
            ],
        )
        self.assertEqual(parsed.values(b"set-cookie"), [b"a=1", b"b=2"])
        self.assertEqual((parsed.framing, parsed.length, parsed.keep_alive), (Framing.LENGTH, 5, True))

    def test_phrase(self) -> None:
        """
        The reason phrase may be empty, or missing with its space.
        """
        self.assertEqual(parse_head(head(b"HTTP/1.1 404 "), b"GET").phrase, b"")
        self.assertEqual(parse_head(head(b"HTTP/1.1 404"), b"GET").status, 404)

    def test_obs_fold(self) -> None:
        """
        A folded field is read with its continuation joined by a space
        (RFC 9112 §5.2).
        """
        parsed = parse_head(head(b"HTTP/1.1 200 OK", b"X-Long: a", b" \tb", b"\tc", b"Y: d"), b"GET")
        self.assertEqual(parsed.headers, [(b"X-Long", b"a b c"), (b"Y", b"d")])

    def test_connection(self) -> None:
        """
        The tokens of every C{Connection} field are reported lower-cased;
        L{ResponseHead.end_to_end} drops them and the hop-by-hop fields.
        """
        parsed = parse_head(
            head(
                b"HTTP/1.1 200 OK",
                b"Connection: X-Secret, keep-alive",
                b"connection: Upgrade-Me",
                b"X-Secret: 1",
                b"Keep-Alive: timeout=5",
                b"Upgrade-Me: 2",
                b"Content-Length: 0",
                b"Cache-Control: max-age=1",
            ),
            b"GET",
        )
        self.assertEqual(parsed.connection, frozenset({b"x-secret", b"keep-alive", b"upgrade-me"}))
        self.assertEqual(
            parsed.end_to_end(), [(b"Content-Length", b"0"), (b"Cache-Control", b"max-age=1")]
        )

    def test_keep_alive(self) -> None:
        """
        HTTP/1.1 persists unless C{Connection: close}; HTTP/1.0 only with
        C{Connection: keep-alive}; a close-delimited body never.
        """
        cases = [
            ([b"HTTP/1.1 200 OK", b"Content-Length: 0"], True),
            ([b"HTTP/1.1 200 OK", b"Content-Length: 0", b"Connection: close"], False),
            ([b"HTTP/1.0 200 OK", b"Content-Length: 0"], False),
            ([b"HTTP/1.0 200 OK", b"Content-Length: 0", b"Connection: Keep-Alive"], True),
            ([b"HTTP/1.1 200 OK"], False),
        ]
        for lines, expected in cases:
            self.assertEqual(parse_head(head(*lines), b"GET").keep_alive, expected, lines)

    def test_framing(self) -> None:
        """
        C{Transfer-Encoding: chunked} frames the body, else
        C{Content-Length}, else the end of the connection.
        """
        cases = [
            ([b"Transfer-Encoding: chunked"], Framing.CHUNKED, None),
            ([b"Transfer-Encoding: Chunked "], Framing.CHUNKED, None),
            ([b"Content-Length: 12"], Framing.LENGTH, 12),
            ([b"Content-Length: 0"], Framing.LENGTH, 0),
            ([b"Content-Length: 7, 7", b"Content-Length: 7"], Framing.LENGTH, 7),
            ([], Framing.CLOSE, None),
        ]
        for lines, framing, length in cases:
            parsed = parse_head(head(b"HTTP/1.1 200 OK", *lines), b"GET")
            self.assertEqual((parsed.framing, parsed.length), (framing, length), lines)

    def test_both_framings(self) -> None:
        """
        With both C{Transfer-Encoding} and C{Content-Length} the body is
        chunked and the connection is not reused (RFC 9112 §6.3).
        """
        parsed = parse_head(
            head(b"HTTP/1.1 200 OK", b"Content-Length: 10", b"Transfer-Encoding: chunked"), b"GET"
        )
        self.assertEqual((parsed.framing, parsed.length, parsed.keep_alive), (Framing.CHUNKED, None, False))

    def test_no_body(self) -> None:
        """
        1xx, 204, 304 and answers to C{HEAD} have no body whatever their
        fields say; the C{Content-Length} stays visible.
        """
        for status, method in [(b"103", b"GET"), (b"204", b"GET"), (b"304", b"GET"), (b"200", b"HEAD")]:
            parsed = parse_head(
                head(b"HTTP/1.1 " + status + b" X", b"Content-Length: 42"), method
            )
            self.assertEqual((parsed.framing, parsed.length, parsed.keep_alive), (Framing.EMPTY, 42, True))
        parsed = parse_head(head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"), b"HEAD")
        self.assertEqual(parsed.framing, Framing.EMPTY)

    def test_malformed(self) -> None:
        """
        What is not an HTTP/1.x response head raises L{MalformedHead}.
        """
        cases = [
            [b"HTTP/2 200 OK"],
            [b"HTTP/1.1 20 OK"],
            [b"HTTP/1.1 099 Low"],
            [b"HTTP/1.1  200 OK"],
            [b"HTTP/1.1 200OK"],
            [b"ICY 200 OK"],
            [b"http/1.1 200 OK"],
            [b"HTTP/1.1 200 O\0K"],
            [b"HTTP/1.1 200 OK", b"No colon here"],
            [b"HTTP/1.1 200 OK", b"Space : before"],
            [b"HTTP/1.1 200 OK", b": no name"],
            [b"HTTP/1.1 200 OK", b"X: bare\rCR"],
            [b"HTTP/1.1 200 OK", b"X: bare\nLF"],
            [b"HTTP/1.1 200 OK", b"X: a\0b"],
            [b"HTTP/1.1 200 OK", b" folded: first"],
            [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket"],
            [b"HTTP/1.1 200 OK", b"Transfer-Encoding: x-magic"],
            [b"HTTP/1.1 200 OK", b"Transfer-Encoding: x-magic, chunked"],
            [b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked, gzip, chunked"],
            [b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
        ]
        for lines in cases:
            self.assertRaises(MalformedHead, parse_head, head(*lines), b"GET")
        self.assertRaises(MalformedHead, parse_head, b"HTTP/1.1 200 OK\r\nX: unterminated", b"GET")

    def test_transfer_codings(self) -> None:
        """
        A body whose last transfer coding is C{chunked} is chunked, one whose
        last is another coding ends with the connection (RFC 9112 §6.3);
        either way the codings beneath are named for the receiver to undo,
        C{identity} left out.
        """
        chunked = parse_head(head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: GZIP, Chunked"), b"GET")
        self.assertEqual((chunked.framing, chunked.codings, chunked.keep_alive), (Framing.CHUNKED, ("gzip",), True))
        close = parse_head(head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: identity, deflate"), b"GET")
        self.assertEqual((close.framing, close.codings, close.keep_alive), (Framing.CLOSE, ("deflate",), False))
        plain = parse_head(head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"), b"GET")
        self.assertEqual(plain.codings, ())

    def test_bad_length(self) -> None:
        """
        A C{Content-Length} that is not decimal, is empty, does not fit, or
        disagrees with another raises L{MalformedHead}.
        """
        for value in [b"", b"+10", b"-1", b"0x10", b"1e3", b"1 0", b"ten", b"1" * 19, b"5, 6", b"5,"]:
            self.assertRaises(
                MalformedHead,
                parse_head,
                head(b"HTTP/1.1 200 OK", b"Content-Length: " + value),
                b"GET",
            )
        self.assertRaises(
            MalformedHead,
            parse_head,
            head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Content-Length: 6"),
            b"GET",
        )
        self.assertEqual(
            parse_head(head(b"HTTP/1.1 200 OK", b"Content-Length: " + b"9" * 18), b"GET").length,
            10**18 - 1,
        )


class RequestTests(SynchronousTestCase):
    """
    What the client writes.
    """

    def test_get(self) -> None:
        """
        A request without body is its head: the request line, C{Host} (the
        origin's authority), the fields in order.
        """
        clock, endpoint, pool, client = make(self)
        client.request(b"GET", b"/a?b=1", [(b"Accept", b"*/*"), (b"X-A", b"1"), (b"X-A", b"2")], Collector())
        self.assertEqual(
            endpoint.wires[0].sent(),
            b"GET /a?b=1 HTTP/1.1\r\nHost: origin.example:8080\r\nAccept: */*\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
        )

    def test_default_port(self) -> None:
        """
        The C{Host} of an origin on its scheme's port has no port.
        """
        endpoint = MemoryEndpoint()
        pool = OriginPool(Clock(), lambda address: endpoint)
        pool.client("https://origin.example").request(b"GET", b"/", [], Collector())
        self.assertIn(b"\r\nHost: origin.example\r\n", endpoint.wires[0].sent())

    def test_bytes_body(self) -> None:
        """
        A body given whole goes with C{Content-Length}, in the same write as
        the head; C{b""} sends C{Content-Length: 0}.
        """
        clock, endpoint, pool, client = make(self)
        client.request(b"POST", b"/", [], Collector(), b"abc")
        client.request(b"POST", b"/", [], Collector(), b"")
        self.assertEqual(endpoint.wires[0].transport.io.getvalue().count(b"\r\n"), 4)
        self.assertTrue(endpoint.wires[0].sent().endswith(b"Content-Length: 3\r\n\r\nabc"))
        self.assertTrue(endpoint.wires[1].sent().endswith(b"Content-Length: 0\r\n\r\n"))

    def test_refused_arguments(self) -> None:
        """
        Bad fields raise L{ValueError} at once, before any connection.
        """
        clock, endpoint, pool, client = make(self)
        self.assertRaises(ValueError, client.request, b"GET", b"/", [(b"X", b"a\r\nb")], Collector())
        self.assertRaises(ValueError, client.request, b"GET", b"/", [(b"Content-Length", b"1")], Collector())
        self.assertEqual((endpoint.wires, clock.getDelayedCalls()), ([], []))


class AnswerTests(SynchronousTestCase):
    """
    How answers are read and delivered.
    """

    def test_length(self) -> None:
        """
        A C{Content-Length} answer is delivered head then body; the request's
        L{Deferred} fires with the head once all came, and no timer is left.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Recorder()
        d = client.request(b"GET", b"/", [], receiver)
        endpoint.wires[0].answer(OK[:60])
        self.assertNoResult(d)
        endpoint.wires[0].answer(OK[60:])
        self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual(receiver.events[0], ("head", 200))
        self.assertEqual(receiver.body(), b"hello")
        self.assertEqual(receiver.head.headers[0], (b"Content-Type", b"text/plain"))
        self.assertEqual([c.func for c in clock.getDelayedCalls()], [pool._sweep])

    def test_answer_while_completing(self) -> None:
        """
        A request sent on the connection from the completion of the one
        before, whose answer arrives before that completion returns, is
        answered (its bytes are not left behind in the connection).
        """
        clock, endpoint, pool, client = make(self)
        later = []

        def again(head: object) -> None:
            receiver = Recorder()
            later.append((receiver, client.request(b"GET", b"/2", [], receiver)))
            wire.answer(OK)

        d = client.request(b"GET", b"/1", [], Recorder())
        d.addCallback(again)
        [wire] = endpoint.wires
        wire.answer(OK)
        [(receiver, second)] = later
        self.assertEqual(self.successResultOf(second).status, 200)
        self.assertEqual(receiver.body(), b"hello")
        self.assertEqual(len(endpoint.wires), 1)

    def test_every_split(self) -> None:
        """
        However the bytes of an answer are split into reads, the same head
        and body are delivered and the connection is kept: for a
        C{Content-Length} answer and a chunked one (extensions and trailers
        ignored).
        """
        for answer, body in [(OK, b"hello"), (CHUNKED, b"Wikipedia in\r\n\r\nchunks.")]:
            splits = [[answer[:i], answer[i:]] for i in range(1, len(answer))]
            splits.append([answer[i:i + 1] for i in range(len(answer))])
            for pieces in splits:
                clock, endpoint, pool, client = make(self)
                receiver = Recorder()
                d = client.request(b"GET", b"/", [], receiver)
                endpoint.wires[0].answer(*pieces)
                self.assertEqual(self.successResultOf(d).status, 200)
                self.assertEqual((receiver.body(), pool.idle), (body, 1), pieces)

    def test_interim(self) -> None:
        """
        1xx answers are delivered in order before the final head, whether
        they come in one read with it or apart.
        """
        interims = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        for pieces in [[interims + OK], [interims[:25], interims[25:], OK]]:
            clock, endpoint, pool, client = make(self)
            receiver = Recorder()
            d = client.request(b"GET", b"/", [], receiver)
            endpoint.wires[0].answer(*pieces)
            self.successResultOf(d)
            self.assertEqual(
                receiver.events, [("interim", 100), ("interim", 103), ("head", 200), ("body", b"hello")]
            )
        collector = Collector()
        client.request(b"GET", b"/", [], collector)
        endpoint.wires[0].answer(interims + OK)
        self.assertEqual(collector.interims[1].headers, [(b"Link", b"</a.css>; rel=preload")])

    def test_no_body(self) -> None:
        """
        An answer to C{HEAD} (its C{Content-Length} visible), a 204 and a
        304 end with their head, and the connection is kept.
        """
        for method, status in [(b"HEAD", b"200 OK"), (b"GET", b"204 No Content"), (b"GET", b"304 Not Modified")]:
            clock, endpoint, pool, client = make(self)
            receiver = Recorder()
            d = client.request(method, b"/", [], receiver)
            endpoint.wires[0].answer(b"HTTP/1.1 " + status + b"\r\nContent-Length: 1234\r\n\r\n")
            self.assertEqual(self.successResultOf(d).length, 1234)
            self.assertEqual((receiver.body(), pool.idle), (b"", 1))

    def test_close_delimited(self) -> None:
        """
        A body with neither length nor chunks ends when the origin closes:
        complete on a clean close; the connection is not kept.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Recorder()
        d = client.request(b"GET", b"/", [], receiver)
        wire = endpoint.wires[0]
        wire.answer(b"HTTP/1.1 200 OK\r\n\r\nall", b" of it")
        self.assertNoResult(d)
        wire.lose()
        self.successResultOf(d)
        self.assertEqual((receiver.body(), pool.idle), (b"all of it", 0))

    def test_close_delimited_reset(self) -> None:
        """
        A close-delimited body cut by a reset fails with L{TruncatedBody}.
        """
        clock, endpoint, pool, client = make(self)
        d = client.request(b"GET", b"/", [], Recorder())
        endpoint.wires[0].answer(b"HTTP/1.1 200 OK\r\n\r\npart")
        endpoint.wires[0].lose(ConnectionLost())
        self.failureResultOf(d, TruncatedBody)

    def test_connection_tokens(self) -> None:
        """
        The fields named in C{Connection} are reported, so that the caller
        can drop them; C{Connection: close} closes the connection after the
        answer.
        """
        clock, endpoint, pool, client = make(self)
        d = client.request(b"GET", b"/", [], Collector())
        endpoint.wires[0].answer(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n"
        )
        head = self.successResultOf(d)
        self.assertEqual(head.connection, frozenset({b"close", b"x-hop"}))
        self.assertEqual(head.end_to_end(), [(b"Content-Length", b"0")])
        self.assertTrue(endpoint.wires[0].transport.disconnecting)
        self.assertEqual(pool.idle, 0)

    def test_extra_bytes(self) -> None:
        """
        Bytes past the end of an answer leave the answer complete but the
        connection out of step: it is closed, not kept.
        """
        clock, endpoint, pool, client = make(self)
        receiver = Recorder()
        d = client.request(b"GET", b"/", [], receiver)
        endpoint.wires[0].answer(OK + b"HTTP/1.1 200 OK\r\n")
        self.successResultOf(d)
        self.assertEqual(receiver.body(), b"hello")
        self.assertEqual(pool.idle, 0)
        self.assertTrue(endpoint.wires[0].transport.disconnecting)
