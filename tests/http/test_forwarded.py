"""
Tests for L{phantom_frame.proxy.forwarded}: the fields a pass-through or a
fill forwards, serialised once per remembered head and client.
"""

from __future__ import annotations

from typing import Dict, Optional

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.http import relayheads
from phantom_frame.proxy import forwarded
from phantom_frame.proxy.forwarded import fill_fields, forwarded_fields
from phantom_frame.proxy.origin import FILL_DROPPED
from phantom_frame.proxy.heads import Fields, read_head, request_head
from phantom_frame.proxy.passthrough import forward_headers
from phantom_frame.proxy.rules import NO_RULES, HeaderRules
from phantom_frame.proxy.view import RequestView
from tests.http.test_relay import RelayRig, request


class FakeOrigin:
    """
    What L{forwarded_fields} reads of an origin: its C{Host} field.
    """

    host = (b"Host", b"origin:3000")


def view(headers: Dict[str, str], client: Optional[str] = None) -> RequestView:
    """
    @return: a view of C{GET /page?q=1} with C{headers}.
    """
    return RequestView(b"GET", b"/page", b"q=1", headers, None, client, False, b"")


class ForwardedFieldsTests(SynchronousTestCase):
    """
    The fields are those of L{forward_headers} with the origin's C{Host}
    first, made once per remembered head and client.
    """

    def setUp(self) -> None:
        """
        Start with nothing remembered.
        """
        forwarded._forwarded.clear()
        self.addCleanup(forwarded._forwarded.clear)
        self.origin = FakeOrigin()

    def expected(self, own: RequestView, rules: HeaderRules = NO_RULES) -> bytes:
        """
        @return: the request head that pairs give for C{own}.
        """
        headers = forward_headers(own, rules=rules)
        headers.insert(0, self.origin.host)
        return request_head(b"GET", b"/page?q=1", b"unused", headers)[0]

    def test_remembered(self) -> None:
        """
        A client's own request id is forwarded; the same head from the same
        client gets the very same L{Fields}, another client its own.
        """
        shared = view({"host": "example.com", "accept": "*/*", "x-request-id": "client-1"})
        own = view(dict(shared.headers), "10.0.0.1")
        fields = forwarded_fields(shared, own, self.origin, NO_RULES)
        self.assertIsInstance(fields, Fields)
        self.assertEqual(request_head(b"GET", b"/page?q=1", b"unused", fields)[0], self.expected(own))
        again = view(dict(shared.headers), "10.0.0.1")
        self.assertIs(forwarded_fields(shared, again, self.origin, NO_RULES), fields)
        other = view(dict(shared.headers), "10.0.0.2")
        data = request_head(b"GET", b"/", b"o", forwarded_fields(shared, other, self.origin, NO_RULES))[0]
        self.assertIn(b"X-Forwarded-For: 10.0.0.2\r\n", data)
        self.assertEqual(len(forwarded._forwarded), 2)

    def test_sharedFields(self) -> None:
        """
        Remembered heads of other paths whose header fields are the same
        object (as the channel shares them) get the very same L{Fields};
        the same fields on a secure connection get their own.
        """
        fields = {"host": "example.com", "accept": "*/*"}
        first = view(fields)
        second = RequestView(b"GET", b"/other", b"", fields, None, None, False, b"")
        own = view(dict(fields), "10.0.0.1")
        made = forwarded_fields(first, own, self.origin, NO_RULES)
        self.assertIs(forwarded_fields(second, own, self.origin, NO_RULES), made)
        secure = RequestView(b"GET", b"/other", b"", fields, None, None, True, b"")
        mine = forwarded_fields(secure, own, self.origin, NO_RULES)
        self.assertIsNot(mine, made)
        self.assertEqual(len(forwarded._forwarded), 2)

    def test_newRequestId(self) -> None:
        """
        An id the proxy made for a request without one is forwarded after
        the remembered fields, a new one for each request.
        """
        shared = view({"host": "example.com"})
        heads = []
        for rid in ("made-1", "made-2"):
            own = view({"host": "example.com", "x-request-id": rid}, "10.0.0.1")
            heads.append(request_head(b"GET", b"/", b"o", forwarded_fields(shared, own, self.origin, NO_RULES))[0])
        self.assertIn(b"x-request-id: made-1\r\n", heads[0])
        self.assertIn(b"x-request-id: made-2\r\n", heads[1])
        self.assertEqual(heads[0].count(b"x-request-id"), 1)
        self.assertEqual(len(forwarded._forwarded), 1)

    def test_refusedRequestId(self) -> None:
        """
        A client id that was refused (and replaced) is not forwarded: the
        fields are made from the request's own view, as pairs.
        """
        shared = view({"host": "example.com", "x-request-id": "bad id"})
        own = view({"host": "example.com", "x-request-id": "made-1"}, "10.0.0.1")
        fields = forwarded_fields(shared, own, self.origin, NO_RULES)
        self.assertIsInstance(fields, list)
        data = request_head(b"GET", b"/page?q=1", b"unused", fields)[0]
        self.assertEqual(data, self.expected(own))
        self.assertNotIn(b"bad id", data)

    def test_rules(self) -> None:
        """
        Header rules that set or remove request headers are applied anew
        for each request, and nothing is remembered.
        """
        rules = HeaderRules(request_remove=frozenset({b"accept"}))
        shared = view({"host": "example.com", "accept": "*/*", "x-request-id": "c"})
        own = view(dict(shared.headers), "10.0.0.1")
        fields = forwarded_fields(shared, own, self.origin, rules)
        self.assertIsInstance(fields, list)
        self.assertNotIn(b"accept", request_head(b"GET", b"/", b"o", fields)[0].lower())
        self.assertEqual(forwarded._forwarded, {})


class FillFieldsTests(SynchronousTestCase):
    """
    A fill forwards the fields of a pass-through but those it drops, made
    once per remembered head and client; without a remembered head, or
    with header rules, as pairs without C{Host}.
    """

    HEADERS = {
        "host": "example.com", "accept": "*/*", "accept-encoding": "br", "if-none-match": '"a"',
        "range": "bytes=0-1",
    }

    def setUp(self) -> None:
        """
        Start with nothing remembered.
        """
        forwarded._forwarded.clear()
        self.addCleanup(forwarded._forwarded.clear)
        self.origin = FakeOrigin()

    def test_remembered(self) -> None:
        """
        The fields of a remembered head leave out what a fill drops, carry
        the origin's C{Host} first and the request's own id, and are made
        once: another request of the same head gets the very same fields
        but its id; a pass-through of that head gets fields of its own.
        """
        shared = view(dict(self.HEADERS))
        own = view(dict(self.HEADERS, **{"x-request-id": "made-1"}), "10.0.0.1")
        fields = fill_fields(own, shared, self.origin, NO_RULES, FILL_DROPPED)
        self.assertIsInstance(fields, Fields)
        data = request_head(b"GET", b"/page?q=1", b"unused", fields)[0]
        expected = forward_headers(own, FILL_DROPPED)
        expected.insert(0, self.origin.host)
        # (The id the proxy made comes after the remembered fields.)
        made = request_head(b"GET", b"/page?q=1", b"unused", expected)[0]
        self.assertEqual(sorted(data.split(b"\r\n")), sorted(made.split(b"\r\n")))
        self.assertTrue(data.startswith(b"GET /page?q=1 HTTP/1.1\r\nHost: origin:3000\r\n"), data)
        for dropped in (b"accept-encoding", b"if-none-match", b"range"):
            self.assertNotIn(dropped, data.lower())
        self.assertIn(b"x-request-id: made-1\r\n", data)
        again = view(dict(self.HEADERS, **{"x-request-id": "made-2"}), "10.0.0.1")
        second = fill_fields(again, shared, self.origin, NO_RULES, FILL_DROPPED)
        self.assertIn(b"x-request-id: made-2\r\n", second.data)
        self.assertEqual(second.data.replace(b"made-2", b"made-1"), fields.data)
        self.assertEqual(len(forwarded._forwarded), 1)
        passed = forwarded_fields(shared, own, self.origin, NO_RULES)
        self.assertIn(b"accept-encoding", passed.data.lower())
        self.assertEqual(len(forwarded._forwarded), 2)

    def test_notRemembered(self) -> None:
        """
        Without a remembered head the fields are pairs, without C{Host}
        (the origin adds its own), and nothing is remembered.
        """
        own = view(dict(self.HEADERS), "10.0.0.1")
        pairs = fill_fields(own, None, self.origin, NO_RULES, FILL_DROPPED)
        self.assertEqual(pairs, forward_headers(own, FILL_DROPPED))
        self.assertNotIn(b"host", [n.lower() for n, _ in pairs])
        self.assertEqual(forwarded._forwarded, {})

    def test_rules(self) -> None:
        """
        With header rules that set or remove request headers, the pairs
        are made anew for each request, the rules applied.
        """
        rules = HeaderRules(request_remove=frozenset({b"accept"}))
        shared = view(dict(self.HEADERS))
        own = view(dict(self.HEADERS), "10.0.0.1")
        pairs = fill_fields(own, shared, self.origin, rules, FILL_DROPPED)
        self.assertEqual(pairs, forward_headers(own, FILL_DROPPED, rules))
        self.assertNotIn(b"accept", [n.lower() for n, _ in pairs])
        self.assertEqual(forwarded._forwarded, {})


class RelayHeadTests(SynchronousTestCase):
    """
    The part of a relayed head made of the origin's head is made once per
    head and header rules.
    """

    def setUp(self) -> None:
        """
        Start with nothing remembered.
        """
        relayheads._relayed.clear()
        self.addCleanup(relayheads._relayed.clear)

    def test_remembered(self) -> None:
        """
        The same head and rules give the same bytes, made once; other rules
        make them again.
        """
        head = read_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nConnection: x-a\r\n", b"GET")
        known = relayheads.relay_head(head, NO_RULES)
        self.assertEqual(known[2:], (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", False, False, {}))
        self.assertIs(relayheads._relayed[id(head)], known)
        rules = HeaderRules(response_remove=frozenset({b"content-length"}))
        other = relayheads.relay_head(head, rules)
        self.assertIs(relayheads._relayed[id(head)], other)
        self.assertIs(other[1], rules)

    def test_start_remembered(self) -> None:
        """
        Relayed answers with the same origin head and C{Cache-Status} start
        with the same bytes, made once: the head's fields and
        C{Cache-Status}.
        """
        rig = RelayRig(True)
        self.addCleanup(rig.handle.close)
        answers = [rig.exchange(request("/a")) for _ in range(2)]
        self.assertEqual(rig.relayed(), 2)
        starts = [known[5] for known in relayheads._relayed.values()]
        self.assertEqual(len(starts), 1)
        [(header, start)] = starts[0].items()
        self.assertTrue(start.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(start.endswith(b"\r\nCache-Status: " + header + b"\r\n"))
        for answer in answers:
            self.assertTrue(answer.startswith(start))
