"""
Tests for L{phantom_frame.cache.keys}.
"""

from __future__ import annotations

import attr
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.keys import RequestInfo, default_cache_key


class RequestInfoTests(SynchronousTestCase):
    """
    Tests for L{RequestInfo}.
    """

    def test_fromRaw(self) -> None:
        """
        L{RequestInfo.from_raw} decodes the method, path and query as latin-1.
        """
        info = RequestInfo.from_raw(b"GET", b"/caf\xe9", b"a=1&b", [])
        self.assertEqual(info, RequestInfo("GET", "/caf\xe9", "a=1&b", {}))

    def test_fromRawHeaders(self) -> None:
        """
        Header names are lower-cased and repeated headers joined with C{", "}
        in the order received.
        """
        info = RequestInfo.from_raw(
            b"GET",
            b"/",
            b"",
            [
                (b"Accept", b"text/html"),
                (b"X-Many", b"one"),
                (b"x-many", b"two"),
                (b"X-Latin", b"\xff"),
            ],
        )
        self.assertEqual(
            info.headers,
            {"accept": "text/html", "x-many": "one, two", "x-latin": "\xff"},
        )

    def test_frozen(self) -> None:
        """
        A L{RequestInfo} cannot be changed.
        """
        info = RequestInfo("GET", "/", "", {})
        self.assertRaises(attr.exceptions.FrozenInstanceError, setattr, info, "path", "/x")


class DefaultCacheKeyTests(SynchronousTestCase):
    """
    Tests for L{default_cache_key}.
    """

    def test_withoutQuery(self) -> None:
        """
        Without a query the key is C{METHOD:PATH}.
        """
        self.assertEqual(
            default_cache_key(RequestInfo("GET", "/users", "", {})), "GET:/users"
        )

    def test_withQuery(self) -> None:
        """
        With a query the key is C{METHOD:PATH?QUERY}, the query raw.
        """
        info = RequestInfo("GET", "/users", "b=2&a=%20", {})
        self.assertEqual(default_cache_key(info), "GET:/users?b=2&a=%20")

    def test_emptyQuery(self) -> None:
        """
        An empty query (a bare trailing C{?}) counts as none.
        """
        info = RequestInfo.from_raw(b"GET", b"/users", b"", [])
        self.assertEqual(default_cache_key(info), "GET:/users")

    def test_method(self) -> None:
        """
        The method is part of the key.
        """
        info = RequestInfo("POST", "/search", "q=x", {})
        self.assertEqual(default_cache_key(info), "POST:/search?q=x")

    def test_headersIgnored(self) -> None:
        """
        Headers do not change the default key.
        """
        info = RequestInfo("GET", "/", "", {"cookie": "a=b"})
        self.assertEqual(default_cache_key(info), "GET:/")
