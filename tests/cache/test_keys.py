"""
Tests for L{phantom_frame.cache.keys}.
"""

from __future__ import annotations

import attr
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.keys import QueryFilter, RequestInfo, default_cache_key, request_host


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

    def test_fromRawHost(self) -> None:
        """
        L{RequestInfo.from_raw} takes the host; without one it is C{""}.
        """
        info = RequestInfo.from_raw(b"GET", b"/", b"", [], "example.com")
        self.assertEqual(info, RequestInfo("GET", "/", "", {}, "example.com"))
        self.assertEqual(RequestInfo("GET", "/", "", {}).host, "")

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

    def test_host(self) -> None:
        """
        With a host the key is C{METHOD://HOST/PATH?QUERY}: two hosts never
        share a key, and no host-scoped key is a host-less one.
        """
        self.assertEqual(
            default_cache_key(RequestInfo("GET", "/users", "page=2", {}, "example.com")),
            "GET://example.com/users?page=2",
        )
        self.assertEqual(
            default_cache_key(RequestInfo("GET", "/", "", {}, "[::1]:8080")), "GET://[::1]:8080/"
        )
        keys = {
            default_cache_key(RequestInfo("GET", "/x", "", {}, host))
            for host in ("a.example", "b.example", "a.example:81", "")
        }
        self.assertEqual(len(keys), 4)

    def test_headersIgnored(self) -> None:
        """
        Headers do not change the default key.
        """
        info = RequestInfo("GET", "/", "", {"cookie": "a=b"})
        self.assertEqual(default_cache_key(info), "GET:/")


class RequestHostTests(SynchronousTestCase):
    """
    Tests for L{request_host}.
    """

    def test_normalised(self) -> None:
        """
        Hosts are lower-cased, lose one trailing dot and their scheme's
        default port.
        """
        for value, secure, expected in [
            ("Example.COM", False, "example.com"),
            ("example.com.", False, "example.com"),
            ("example.com:80", False, "example.com"),
            ("example.com:080", False, "example.com"),
            ("example.com:", False, "example.com"),
            ("example.com:443", False, "example.com:443"),
            ("example.com:443", True, "example.com"),
            ("example.com:80", True, "example.com:80"),
            ("EXAMPLE.com:8080", True, "example.com:8080"),
            ("127.0.0.1:3000", False, "127.0.0.1:3000"),
            ("[::1]", False, "[::1]"),
            ("[2001:DB8::1]:80", False, "[2001:db8::1]"),
            ("my_host-1", False, "my_host-1"),
        ]:
            self.assertEqual(request_host(value, secure), expected, value)

    def test_absent(self) -> None:
        """
        No C{Host}, or an empty one, is the empty host.
        """
        self.assertEqual(request_host(None, False), "")
        self.assertEqual(request_host("", True), "")

    def test_malformed(self) -> None:
        """
        Anything but one C{host[:port]} is malformed: two hosts joined, a
        path, user info, spaces, a bad port, non-ASCII letters.
        """
        for value in [
            "a.example, b.example",
            "a.example/admin",
            "user@a.example",
            "a.example :80",
            " a.example",
            "a..example",
            ".a.example",
            "a.example:65536",
            "a.example:8o",
            "a.example:80:80",
            "caf\xe9.example",
            "[::1",
            "::1",
            "a.example?x",
            "*",
        ]:
            self.assertIsNone(request_host(value, False), value)


class QueryFilterTests(SynchronousTestCase):
    """
    Tests for L{QueryFilter}.
    """

    def test_removes(self) -> None:
        """
        Parameters whose name a glob matches are left out; the rest keep
        their order and spelling.
        """
        names = QueryFilter(["utm_*", "fbclid", "_rsc"])
        self.assertTrue(names)
        self.assertEqual(names.apply("b=2&utm_source=x&a=%20&fbclid=1&utm_medium"), "b=2&a=%20")
        self.assertEqual(names.apply("_rsc=abc"), "")
        self.assertEqual(names.apply("fbclidx=1&x_rsc=2"), "fbclidx=1&x_rsc=2")
        self.assertEqual(names.apply(""), "")

    def test_encodedNames(self) -> None:
        """
        A name is matched as sent and percent-decoded (C{+} is a space).
        """
        names = QueryFilter(["utm_*", "a b"])
        self.assertEqual(names.apply("utm%5Fsource=1&a+b=2&a%20b=3&c=4"), "c=4")

    def test_none(self) -> None:
        """
        Without names the query is kept as it is.
        """
        names = QueryFilter([])
        self.assertFalse(names)
        self.assertEqual(names.apply("utm_source=1&&x"), "utm_source=1&&x")
