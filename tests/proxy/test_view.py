"""
Tests for L{phantom_frame.proxy.view}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from phantom_frame.proxy.view import RequestView, joined_headers, view_of


class RequestViewTests(SynchronousTestCase):
    """
    A view reads the same from raw headers and from a header table.
    """

    def test_joined(self) -> None:
        """
        Names are lower-cased; repeated headers are joined with C{", "}.
        """
        self.assertEqual(
            joined_headers([(b"Accept", b"a"), (b"X-A", b"1"), (b"accept", b"b")]),
            {"accept": "a, b", "x-a": "1"},
        )

    def test_values(self) -> None:
        """
        L{RequestView.values} gives each value as received, from raw
        headers or, without them, from the table.
        """
        raw = [(b"Range", b"bytes=0-1, 5-6"), (b"X-Forwarded-For", b"a"), (b"x-forwarded-for", b"b")]
        view = RequestView(b"GET", b"/p", b"", joined_headers(raw), raw)
        self.assertEqual(view.values(b"range"), [b"bytes=0-1, 5-6"])
        self.assertEqual(view.values(b"x-forwarded-for"), [b"a", b"b"])
        self.assertEqual(view.values(b"missing"), [])
        bare = RequestView(b"GET", b"/p", b"q=1", {"range": "bytes=0-1"}, None)
        self.assertEqual(bare.values(b"range"), [b"bytes=0-1"])
        self.assertEqual(bare.pairs(), [(b"range", b"bytes=0-1")])
        self.assertEqual(bare.target, b"/p?q=1")
        self.assertEqual(view.target, b"/p")

    def test_view_of_request(self) -> None:
        """
        L{view_of} reads a twisted.web request's method, headers, client
        and scheme.
        """
        request = Request(DummyChannel())
        request.method = b"HEAD"
        request.requestHeaders.addRawHeader(b"Cookie", b"a=1")
        request.requestHeaders.addRawHeader(b"Cookie", b"b=2")
        view = view_of(request, b"/p", b"x=1", b"/api")
        self.assertEqual(
            (view.method, view.path, view.query, view.prefix, view.secure),
            (b"HEAD", b"/p", b"x=1", b"/api", False),
        )
        self.assertEqual(view.headers["cookie"], "a=1, b=2")
        self.assertEqual(view.values(b"cookie"), [b"a=1", b"b=2"])
        self.assertEqual(view.client, request.getClientAddress().host)
