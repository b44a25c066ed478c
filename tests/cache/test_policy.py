"""
Tests for L{phantom_frame.cache.policy}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache import policy
from phantom_frame.cache.policy import (
    MAIN_STATUSES,
    NOT_FOUND_STATUSES,
    header_value,
    header_values,
    is_soft_404,
    media_type,
    opaque_coding,
    parse_cache_control,
    request_bypass_reason,
    response_bypass_reason,
    strategy_allows,
    vary_names,
)
from phantom_frame.proxy.settings import CacheStrategy

HTML = "text/html"
IMAGE = "image/png"


class HeaderTests(SynchronousTestCase):
    """
    Tests for L{header_values}, L{header_value} and L{media_type}.
    """

    headers = [
        (b"Content-Type", b"text/html"),
        (b"X-Many", b"a"),
        (b"x-many", b"b"),
        (b"X-MANY", b"c, d"),
    ]

    def test_headerValues(self) -> None:
        """
        L{header_values} finds every value, whatever the case of the names.
        """
        self.assertEqual(header_values(self.headers, b"x-many"), [b"a", b"b", b"c, d"])
        self.assertEqual(header_values(self.headers, b"X-Many"), [b"a", b"b", b"c, d"])
        self.assertEqual(header_values(self.headers, b"x-none"), [])

    def test_headerValue(self) -> None:
        """
        L{header_value} joins the values with C{", "}, or gives L{None}.
        """
        self.assertEqual(header_value(self.headers, b"X-MANY"), b"a, b, c, d")
        self.assertEqual(header_value(self.headers, b"content-type"), b"text/html")
        self.assertIsNone(header_value(self.headers, b"x-none"))

    def test_mediaType(self) -> None:
        """
        L{media_type} lower-cases and drops parameters and whitespace.
        """
        self.assertEqual(
            media_type([(b"content-type", b" Text/HTML ; charset=UTF-8")]), "text/html"
        )
        self.assertEqual(media_type([(b"Content-Type", b"image/svg+xml")]), "image/svg+xml")

    def test_mediaTypeAbsent(self) -> None:
        """
        Without a C{Content-Type}, or with an empty one, there is no media
        type.
        """
        self.assertIsNone(media_type([]))
        self.assertIsNone(media_type([(b"Content-Type", b"")]))
        self.assertIsNone(media_type([(b"Content-Type", b" ; charset=utf-8")]))

    def test_mediaTypeRepeated(self) -> None:
        """
        A repeated C{Content-Type} gives the last non-empty one.
        """
        headers = [(b"Content-Type", b"text/plain"), (b"Content-Type", b"text/html")]
        self.assertEqual(media_type(headers), "text/html")

    def test_mediaTypeRemembered(self) -> None:
        """
        Each C{Content-Type} value is read once: asked again, as a list or
        as a tuple of pairs, it gives the same answer from what is
        remembered, which holds a bounded number of values.
        """
        value = b"Application/JSON; charset=utf-8"
        self.assertEqual(media_type([(b"Content-Type", value)]), "application/json")
        self.assertEqual(policy._MEDIA_TYPES[value], "application/json")
        self.assertEqual(media_type(((b"content-type", value),)), "application/json")
        self.assertIsNone(media_type(((b"content-type", b" ;q"),)))
        self.patch(policy, "_MEDIA_TYPES", {b"x/%d" % i: "x/%d" % i for i in range(512)})
        self.assertEqual(media_type(((b"content-type", b"Text/CSV"),)), "text/csv")
        self.assertNotIn(b"Text/CSV", policy._MEDIA_TYPES)


class StrategyAllowsTests(SynchronousTestCase):
    """
    Tests for L{strategy_allows}.
    """

    assets = [
        "image/png",
        "image/svg+xml",
        "font/woff2",
        "text/css",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/json",
        "application/manifest+json",
        "application/wasm",
        "application/xml",
        "text/xml",
    ]
    others = ["text/html", "application/xhtml+xml", "text/plain", "application/pdf"]

    def check(self, strategy: CacheStrategy, allowed, refused) -> None:
        """
        Assert that C{strategy} stores every media type in C{allowed} and
        none in C{refused}.
        """
        for media in allowed:
            self.assertTrue(strategy_allows(strategy, media), (strategy, media))
        for media in refused:
            self.assertFalse(strategy_allows(strategy, media), (strategy, media))

    def test_all(self) -> None:
        """
        C{all} stores every media type, and responses without one.
        """
        self.check(CacheStrategy.ALL, self.assets + self.others + [None], [])

    def test_none(self) -> None:
        """
        C{none} stores nothing.
        """
        self.check(CacheStrategy.NONE, [], self.assets + self.others + [None])

    def test_onlyHtml(self) -> None:
        """
        C{only_html} stores C{text/html} and C{application/xhtml+xml} only.
        """
        self.check(
            CacheStrategy.ONLY_HTML,
            ["text/html", "application/xhtml+xml"],
            self.assets + ["text/plain", "text/htmlx", None],
        )

    def test_noImages(self) -> None:
        """
        C{no_images} stores everything but C{image/*}, responses without a
        media type included.
        """
        self.check(
            CacheStrategy.NO_IMAGES,
            self.others + ["font/woff2", "text/css", None],
            ["image/png", "image/svg+xml", "image/x-icon"],
        )

    def test_onlyImages(self) -> None:
        """
        C{only_images} stores C{image/*} only.
        """
        self.check(
            CacheStrategy.ONLY_IMAGES,
            ["image/png", "image/svg+xml", "image/avif"],
            self.others + ["font/woff2", "text/css", "imagex/png", None],
        )

    def test_onlyAssets(self) -> None:
        """
        C{only_assets} stores images, fonts, style sheets, scripts, JSON,
        manifests, WebAssembly and XML, and nothing else.
        """
        self.check(
            CacheStrategy.ONLY_ASSETS,
            self.assets,
            self.others + ["application/ld+json", "text/plain", None],
        )


class ParseCacheControlTests(SynchronousTestCase):
    """
    Tests for L{parse_cache_control}.
    """

    def test_simple(self) -> None:
        """
        Directives are lower-cased, with values or L{None}.
        """
        self.assertEqual(
            parse_cache_control([b"Public, Max-Age=60", b"s-maxage=30"]),
            {"public": None, "max-age": "60", "s-maxage": "30"},
        )

    def test_quoted(self) -> None:
        """
        Quoted values are unquoted, backslash escapes and commas included.
        """
        self.assertEqual(
            parse_cache_control([b'private="set-cookie, x", foo="a\\"b", no-store']),
            {"private": "set-cookie, x", "foo": 'a"b', "no-store": None},
        )

    def test_whitespace(self) -> None:
        """
        Whitespace around names, C{=} and values is ignored.
        """
        self.assertEqual(
            parse_cache_control([b"  max-age = 5 ,\tno-cache "]),
            {"max-age": "5", "no-cache": None},
        )

    def test_firstValueWins(self) -> None:
        """
        A repeated directive keeps its first value.
        """
        self.assertEqual(
            parse_cache_control([b"max-age=5", b"max-age=10, MAX-AGE=1"]),
            {"max-age": "5"},
        )

    def test_emptyItems(self) -> None:
        """
        Empty items and stray commas are skipped.
        """
        self.assertEqual(
            parse_cache_control([b",, ,no-store,,", b"", b","]), {"no-store": None}
        )
        self.assertEqual(parse_cache_control([]), {})

    def test_unbalancedQuote(self) -> None:
        """
        An unbalanced quote ends at the next comma, so it cannot hide a
        directive that follows.
        """
        self.assertEqual(
            parse_cache_control([b'max-age="5, private']),
            {"max-age": "5", "private": None},
        )

    def test_garbage(self) -> None:
        """
        Garbage never raises; what can be read is read.
        """
        for value in [
            b"=",
            b"==,=",
            b'"',
            b'"""',
            b"\xff\x00\x7f",
            b'a="\\',
            b"max-age=1 2 3, public",
            b"no-store extra, =x",
            b";;;",
        ]:
            self.assertIsInstance(parse_cache_control([value]), dict)
        self.assertEqual(
            parse_cache_control([b"max-age=1 2 3, =x, public"]),
            {"max-age": "1", "public": None},
        )


class RequestBypassTests(SynchronousTestCase):
    """
    Tests for L{request_bypass_reason}.
    """

    def test_authorization(self) -> None:
        """
        A request with C{Authorization}, in any case, bypasses the cache.
        """
        self.assertEqual(
            request_bypass_reason("GET", [(b"AUTHORIZATION", b"Bearer x")]),
            "authorization",
        )

    def test_plain(self) -> None:
        """
        Other requests may use the cache.
        """
        self.assertIsNone(request_bypass_reason("GET", [(b"Cookie", b"a=b")]))


class ResponseBypassTests(SynchronousTestCase):
    """
    Tests for L{response_bypass_reason}.
    """

    def reason(self, headers, status: int = 200, strategy=CacheStrategy.ALL):
        """
        @return: L{response_bypass_reason} for these arguments.
        """
        return response_bypass_reason(status, headers, strategy)

    def test_storable(self) -> None:
        """
        A plain response in a stored status is storable.
        """
        for status in sorted(MAIN_STATUSES | NOT_FOUND_STATUSES):
            self.assertIsNone(self.reason([(b"Content-Type", b"text/html")], status))

    def test_status(self) -> None:
        """
        Other statuses are not stored: 5xx, 304, 206, 302 and the like.
        """
        for status in [201, 204, 206, 302, 304, 307, 400, 403, 500, 502, 503, 504]:
            self.assertEqual(self.reason([], status), "status")

    def test_setCookie(self) -> None:
        """
        A response with C{Set-Cookie} is not stored.
        """
        self.assertEqual(self.reason([(b"set-cookie", b"a=b")]), "set-cookie")

    def test_noStore(self) -> None:
        """
        C{Cache-Control: no-store} is not stored.
        """
        self.assertEqual(
            self.reason([(b"Cache-Control", b"public, NO-STORE")]), "no-store"
        )

    def test_private(self) -> None:
        """
        C{Cache-Control: private}, plain or qualified, is not stored.
        """
        self.assertEqual(self.reason([(b"Cache-Control", b"private")]), "private")
        self.assertEqual(
            self.reason([(b"Cache-Control", b'max-age=5, private="x-user"')]), "private"
        )

    def test_varyStar(self) -> None:
        """
        C{Vary: *} among the C{Vary} values is not stored.
        """
        self.assertEqual(
            self.reason([(b"Vary", b"Accept-Language"), (b"Vary", b"Origin, *")]),
            "vary-star",
        )

    def test_encoding(self) -> None:
        """
        No C{Content-Encoding} prevents storing: a coding phantom-frame
        cannot undo, alone or among stacked codings, makes the body opaque
        (L{opaque_coding}), stored as it is; known codings do not.
        """
        for coding in [b"zstd", b"gzip, zstd", b"identity", b"br", b"GZIP", b"x-gzip", b"deflate", b"gzip, br", b""]:
            self.assertIsNone(self.reason([(b"Content-Encoding", coding)]), coding)
        for coding in [b"zstd", b"gzip, zstd", b"X-Custom"]:
            self.assertTrue(opaque_coding([(b"Content-Encoding", coding)]), coding)
        for coding in [b"identity", b"br", b"GZIP", b"x-gzip", b"deflate", b"gzip, br", b""]:
            self.assertFalse(opaque_coding([(b"Content-Encoding", coding)]), coding)
        self.assertFalse(opaque_coding([]))

    def test_strategy(self) -> None:
        """
        A media type the strategy does not store is not stored.
        """
        self.assertEqual(
            self.reason([(b"Content-Type", b"image/png")], strategy=CacheStrategy.ONLY_HTML),
            "strategy",
        )
        self.assertEqual(self.reason([], strategy=CacheStrategy.ONLY_HTML), "strategy")
        self.assertEqual(
            self.reason([(b"Content-Type", b"text/html")], strategy=CacheStrategy.NONE),
            "strategy",
        )

    def test_order(self) -> None:
        """
        Reasons are checked in order: status, set-cookie, no-store, private,
        vary-star, strategy.
        """
        headers = [
            (b"Content-Type", b"image/png"),
            (b"Vary", b"*"),
            (b"Cache-Control", b"private"),
            (b"Cache-Control", b"no-store"),
            (b"Set-Cookie", b"a=b"),
        ]
        expected = ["set-cookie", "no-store", "private", "vary-star", "strategy"]
        self.assertEqual(self.reason(headers, 500, CacheStrategy.ONLY_HTML), "status")
        for i, reason in enumerate(expected):
            self.assertEqual(
                self.reason(headers[: len(headers) - i], 200, CacheStrategy.ONLY_HTML),
                reason,
            )

    def test_headersIterable(self) -> None:
        """
        Headers may be given as any iterable, a generator included.
        """
        headers = [(b"Content-Type", b"image/png")]
        self.assertEqual(
            response_bypass_reason(
                200, (pair for pair in headers), CacheStrategy.ONLY_HTML
            ),
            "strategy",
        )


class VaryNamesTests(SynchronousTestCase):
    """
    Tests for L{vary_names}.
    """

    def test_names(self) -> None:
        """
        Names from every C{Vary} value are lower-cased, deduplicated and
        sorted, without C{accept-encoding}.
        """
        headers = [
            (b"Vary", b"Accept-Language, Accept-Encoding"),
            (b"vary", b" origin ,accept-language,,"),
            (b"Other", b"x"),
        ]
        self.assertEqual(vary_names(headers), ("accept-language", "origin"))

    def test_none(self) -> None:
        """
        Without C{Vary}, or with only C{Accept-Encoding}, there are no names.
        """
        self.assertEqual(vary_names([]), ())
        self.assertEqual(vary_names([(b"Vary", b"Accept-Encoding")]), ())

    def test_star(self) -> None:
        """
        C{*} is left in.
        """
        self.assertEqual(vary_names([(b"Vary", b"*, Origin")]), ("*", "origin"))


class SoftNotFoundTests(SynchronousTestCase):
    """
    Tests for L{is_soft_404}.
    """

    def test_canonical(self) -> None:
        """
        The documented tag marks a soft 404.
        """
        self.assertTrue(
            is_soft_404(
                b'<html><head><meta name="phantom-404" content="true"></head></html>'
            )
        )

    def test_variants(self) -> None:
        """
        Attribute order, quoting, case, whitespace, other attributes and a
        self-closing tag do not matter.
        """
        for tag in [
            b"<meta content='true' name='phantom-404'>",
            b'<META NAME="Phantom-404" CONTENT="TRUE">',
            b'<meta\n  name = "phantom-404"\tcontent= "true" />',
            b'<meta data-x="1" name="phantom-404" id=m content="true"/>',
            b"<meta name=phantom-404 content=true>",
            b"<meta name=phantom-404 content=true/>",
            b'<meta name="phantom-404" content=" true ">',
        ]:
            self.assertTrue(is_soft_404(b"<!doctype html><head>" + tag), tag)

    def test_notMarked(self) -> None:
        """
        Other tags, other values and the words alone do not mark a soft 404.
        """
        for body in [
            b"",
            b"<html>phantom-404</html>",
            b'<meta name="phantom-404" content="false">',
            b'<meta name="phantom-404">',
            b'<meta content="true"> <meta name="phantom-404">',
            b'<meta name="phantom-4040" content="true">',
            b'<link name="phantom-404" content="true">',
            b'<metadata name="phantom-404" content="true">',
        ]:
            self.assertFalse(is_soft_404(body), body)

    def test_firstWindowOnly(self) -> None:
        """
        Only the first 64 KiB are examined.
        """
        tag = b'<meta name="phantom-404" content="true">'
        self.assertTrue(is_soft_404(b" " * (64 * 1024 - len(tag)) + tag))
        self.assertFalse(is_soft_404(b" " * (64 * 1024) + tag))

    def test_boundedCost(self) -> None:
        """
        A hostile body of unterminated tags is examined quickly and is not a
        soft 404.
        """
        body = b"<meta phantom-404 " * 200000
        self.assertFalse(is_soft_404(body))


class HeaderValuesTests(SynchronousTestCase):
    """
    L{policy.header_values} reads lists as they are and indexes a tuple
    once for the calls that follow with it.
    """

    def test_values(self) -> None:
        """
        Values come in order, whatever the case of the name, from lists and
        tuples alike; what is returned is the caller's own.
        """
        pairs = [(b"Vary", b"a"), (b"ETag", b'"e"'), (b"vary", b"b")]
        for headers in (pairs, tuple(pairs)):
            self.assertEqual(policy.header_values(headers, b"VARY"), [b"a", b"b"])
            self.assertEqual(policy.header_values(headers, b"etag"), [b'"e"'])
            self.assertEqual(policy.header_values(headers, b"age"), [])
            policy.header_values(headers, b"vary").append(b"c")
            self.assertEqual(policy.header_values(headers, b"vary"), [b"a", b"b"])

    def test_other_tuple(self) -> None:
        """
        Another tuple is read anew, even one equal to the last.
        """
        first = ((b"ETag", b'"1"'),)
        self.assertEqual(policy.header_values(first, b"etag"), [b'"1"'])
        second = ((b"ETag", b'"2"'),)
        self.assertEqual(policy.header_values(second, b"etag"), [b'"2"'])
        self.assertEqual(policy.header_values(tuple(list(first)), b"etag"), [b'"1"'])
