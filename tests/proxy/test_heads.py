"""
Tests for L{phantom_frame.proxy.heads}: L{Fields} and L{read_head}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.proxy import heads
from phantom_frame.proxy.client import MalformedHead
from phantom_frame.proxy.heads import Fields, parse_head, read_head, request_head

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Mon, 01 Dec 2026 10:00:00 GMT\r\n"


class FieldsTests(SynchronousTestCase):
    """
    L{Fields} are header fields serialised once, sent as pairs would be.
    """

    def test_sameHead(self) -> None:
        """
        A request head from L{Fields} is the one from the same pairs.
        """
        pairs = [(b"Accept", b"*/*"), (b"Connection", b"close")]
        fields = Fields.of(pairs).plus(b"x-request-id", b"abc")
        self.assertEqual(
            request_head(b"GET", b"/a?b", b"origin:8080", fields),
            request_head(b"GET", b"/a?b", b"origin:8080", pairs + [(b"x-request-id", b"abc")]),
        )
        self.assertEqual(fields.persistent, False)

    def test_namedHost(self) -> None:
        """
        Fields that name C{Host} are sent without the origin's.
        """
        fields = Fields.of([(b"Host", b"public.example")])
        data, persistent = request_head(b"GET", b"/", b"origin", fields, b"Content-Length: 0\r\n")
        self.assertEqual(data, b"GET / HTTP/1.1\r\nHost: public.example\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(persistent)

    def test_refused(self) -> None:
        """
        Fields with CR or LF, framing fields, and request lines with a
        space, CR or LF are refused as pairs are.
        """
        self.assertRaises(ValueError, Fields.of, [(b"A", b"1\r\nB: 2")])
        self.assertRaises(ValueError, Fields.of, [(b"Transfer-Encoding", b"chunked")])
        self.assertRaises(ValueError, Fields.of([]).plus, b"X", b"1\n")
        self.assertRaises(ValueError, Fields.of([]).plus, b"Content-Length", b"1")
        fields = Fields.of([])
        for target in (b"/a b", b"/a\r\n", b"/\n"):
            self.assertRaises(ValueError, request_head, b"GET", target, b"o", fields)
        self.assertRaises(ValueError, request_head, b"GET", b"/", b"o\r\nX: 1", fields)


class ReadHeadTests(SynchronousTestCase):
    """
    L{read_head} parses as L{parse_head}, once per head's bytes.
    """

    def setUp(self) -> None:
        """
        Start with nothing remembered.
        """
        heads._parsed.clear()
        self.addCleanup(heads._parsed.clear)

    def test_remembered(self) -> None:
        """
        The same bytes give the same L{ResponseHead} object, equal to what
        L{parse_head} gives.
        """
        first = read_head(HEAD, b"GET")
        self.assertIs(read_head(HEAD, b"GET"), first)
        self.assertEqual(first, parse_head(HEAD, b"GET"))

    def test_head(self) -> None:
        """
        An answer to C{HEAD} (framed differently) is neither remembered nor
        taken from what was remembered.
        """
        get = read_head(HEAD, b"GET")
        head = read_head(HEAD, b"HEAD")
        self.assertIsNot(head, get)
        self.assertEqual((get.length, head.framing), (5, parse_head(HEAD, b"HEAD").framing))
        self.assertIs(read_head(HEAD, b"GET"), get)

    def test_bounded(self) -> None:
        """
        At most L{heads.PARSED_HEADS_KEPT} heads are kept, none longer than
        L{heads.PARSED_HEAD_BYTES}; malformed heads raise, and are not kept.
        """
        for i in range(heads.PARSED_HEADS_KEPT + 10):
            read_head(b"HTTP/1.1 200 OK\r\nX-N: %d\r\n" % (i,), b"GET")
        self.assertLessEqual(len(heads._parsed), heads.PARSED_HEADS_KEPT)
        heads._parsed.clear()
        long = b"HTTP/1.1 200 OK\r\nX: " + b"a" * heads.PARSED_HEAD_BYTES + b"\r\n"
        self.assertIsNot(read_head(long, b"GET"), read_head(long, b"GET"))
        self.assertRaises(MalformedHead, read_head, b"HTTP/1.1 200 OK\r\nbad\r\n", b"GET")
        self.assertEqual(len(heads._parsed), 0)
