"""
Tests for L{phantom_frame.cache.freshness}: the HTTP caching rules as pure
functions.
"""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.freshness import (
    HEURISTIC_MAX,
    RequestDirectives,
    ResponseDirectives,
    age_value,
    etag_matches_strong,
    etag_matches_weak,
    freshness_lifetime,
    http_bypass_reason,
    initial_age,
    parse_http_date,
    parse_range,
    weakened,
)

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
EPOCH = 784111777.0


def lifetime(status: int = 200, **headers: str) -> float:
    pairs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return freshness_lifetime(status, pairs, ResponseDirectives.parse(pairs))


class DateTests(SynchronousTestCase):
    """
    L{parse_http_date} reads the three HTTP-date forms and nothing else.
    """

    def test_forms(self) -> None:
        """
        IMF-fixdate, RFC 850 and asctime give the same instant.
        """
        self.assertEqual(parse_http_date(DATE), EPOCH)
        self.assertEqual(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), EPOCH)
        self.assertEqual(parse_http_date(b"Sun Nov  6 08:49:37 1994"), EPOCH)

    def test_invalid(self) -> None:
        """
        Malformed dates are C{None}, never an exception.
        """
        for value in (None, b"", b"0", b"-1", b"yesterday", b"Sun, 32 Nov 1994 08:49:37 GMT",
                      b"Sun, 06 Foo 1994 08:49:37 GMT", b"\xff\xfe", b"Sun, 06 Nov 1994 08:49:37 PST"):
            self.assertIsNone(parse_http_date(value), value)


class DirectiveTests(SynchronousTestCase):
    """
    Response and request directives, read robustly.
    """

    def test_response(self) -> None:
        """
        Each response directive is recognised, case-insensitively.
        """
        d = ResponseDirectives.parse(
            [(b"Cache-Control", b"Public, MAX-AGE=10, s-maxage=20, must-revalidate, "
                                b"stale-while-revalidate=5, stale-if-error=7")]
        )
        self.assertEqual(
            (d.public, d.max_age, d.s_maxage, d.must_revalidate, d.stale_while_revalidate, d.stale_if_error),
            (True, 10, 20, True, 5, 7),
        )
        self.assertTrue(ResponseDirectives.parse([(b"cache-control", b"proxy-revalidate")]).must_revalidate)

    def test_cdn_cache_control_wins(self) -> None:
        """
        C{CDN-Cache-Control} replaces C{Cache-Control} when it has
        directives (RFC 9213).
        """
        headers = [(b"Cache-Control", b"no-store"), (b"CDN-Cache-Control", b"max-age=60")]
        d = ResponseDirectives.parse(headers)
        self.assertEqual((d.no_store, d.max_age, d.cdn), (False, 60, True))
        d = ResponseDirectives.parse([(b"Cache-Control", b"max-age=5"), (b"CDN-Cache-Control", b"")])
        self.assertEqual((d.max_age, d.cdn), (5, False))

    def test_invalid_and_conflicting(self) -> None:
        """
        A non-integer max-age, or two different max-age values, make the
        response stale (lifetime 0).
        """
        for value in (b"max-age=abc", b"max-age=10, max-age=20", b"max-age=-1", b"s-maxage=1.5"):
            self.assertEqual(lifetime(cache_control=value.decode()), 0, value)
        self.assertEqual(lifetime(cache_control="max-age=10, max-age=10"), 10)

    def test_most_restrictive(self) -> None:
        """
        With both max-age and no-cache, no-cache wins.
        """
        self.assertEqual(lifetime(cache_control="max-age=100, no-cache"), 0)

    def test_request(self) -> None:
        """
        Request directives, C{Pragma: no-cache} without C{Cache-Control},
        and max-stale with and without a value.
        """
        d = RequestDirectives.parse([b"max-age=5, min-fresh=2, max-stale, only-if-cached, no-store"])
        self.assertEqual((d.max_age, d.min_fresh, d.max_stale, d.only_if_cached, d.no_store),
                         (5, 2, math.inf, True, True))
        self.assertEqual(RequestDirectives.parse([b"max-stale=30"]).max_stale, 30)
        self.assertTrue(RequestDirectives.parse([], [b"no-cache"]).no_cache)
        self.assertFalse(RequestDirectives.parse([b"max-age=5"], [b"no-cache"]).no_cache)
        self.assertEqual(RequestDirectives.parse([b"max-age=junk"]).max_age, 0)


class LifetimeTests(SynchronousTestCase):
    """
    L{freshness_lifetime} for each source, in RFC 9111's order.
    """

    def test_sources(self) -> None:
        """
        s-maxage, then max-age, then Expires minus Date.
        """
        self.assertEqual(lifetime(cache_control="max-age=10, s-maxage=30"), 30)
        self.assertEqual(lifetime(cache_control="max-age=10", expires="Sun, 06 Nov 1994 09:49:37 GMT", date=DATE.decode()), 10)
        self.assertEqual(lifetime(expires="Sun, 06 Nov 1994 09:49:37 GMT", date=DATE.decode()), 3600)

    def test_expires_invalid(self) -> None:
        """
        An invalid Expires (such as "0") means already expired; so do two
        different Expires values.
        """
        self.assertEqual(lifetime(expires="0", date=DATE.decode()), 0)
        pairs = [(b"expires", b"Sun, 06 Nov 1994 09:49:37 GMT"), (b"expires", b"Sun, 06 Nov 1994 10:49:37 GMT"),
                 (b"date", DATE)]
        self.assertEqual(freshness_lifetime(200, pairs, ResponseDirectives.parse(pairs)), 0)

    def test_heuristic(self) -> None:
        """
        10% of the time since Last-Modified, capped at a day, only for
        heuristically cacheable statuses.
        """
        self.assertEqual(lifetime(date=DATE.decode(), last_modified="Sun, 06 Nov 1994 07:49:37 GMT"), 360)
        self.assertEqual(lifetime(date=DATE.decode(), last_modified="Sun, 06 Nov 1984 07:49:37 GMT"), HEURISTIC_MAX)
        self.assertEqual(lifetime(302, date=DATE.decode(), last_modified="Sun, 06 Nov 1994 07:49:37 GMT"), 0)
        self.assertEqual(lifetime(200, date=DATE.decode()), 0)


class AgeTests(SynchronousTestCase):
    """
    The Age header and RFC 9111 §4.2.3.
    """

    def test_age_value(self) -> None:
        """
        The first member of Age is used; malformed values are ignored.
        """
        self.assertEqual(age_value([(b"age", b"30")]), 30)
        self.assertEqual(age_value([(b"age", b"30, 40")]), 30)
        for bad in (b"-5", b"abc", b"1.5", b""):
            self.assertEqual(age_value([(b"age", bad)]), 0, bad)

    def test_initial_age(self) -> None:
        """
        The larger of the apparent age and the corrected Age value.
        """
        headers = [(b"date", DATE), (b"age", b"10")]
        self.assertEqual(initial_age(headers, EPOCH + 100, EPOCH + 102), 102)
        self.assertEqual(initial_age([(b"age", b"10")], EPOCH, EPOCH + 2), 12)
        self.assertEqual(initial_age([(b"date", b"garbage")], EPOCH, EPOCH), 0)


class StorabilityTests(SynchronousTestCase):
    """
    L{http_bypass_reason}: what a shared cache may store.
    """

    def reason(self, status: int = 200, authorized: bool = False, **headers: str):
        pairs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        return http_bypass_reason(status, pairs, ResponseDirectives.parse(pairs), authorized)

    def test_rules(self) -> None:
        """
        Freshness or a validator is needed; no-store and private refuse;
        302 needs explicit freshness, and so does a 5xx.
        """
        self.assertEqual(self.reason(), "no-freshness")
        self.assertIsNone(self.reason(cache_control="max-age=5"))
        self.assertIsNone(self.reason(etag='"x"'))
        self.assertIsNone(self.reason(cache_control="no-cache", etag='"x"'))
        self.assertEqual(self.reason(cache_control="no-store, max-age=5"), "no-store")
        self.assertEqual(self.reason(cache_control="private, max-age=5"), "private")
        self.assertEqual(self.reason(302, etag='"x"'), "no-freshness")
        self.assertIsNone(self.reason(302, cache_control="max-age=5"))
        self.assertIsNone(self.reason(503, cache_control="max-age=5"))
        self.assertEqual(self.reason(503, etag='"x"'), "no-freshness")

    def test_authorization(self) -> None:
        """
        RFC 9111 §3.5: a response to an authorized request is stored only
        with public, s-maxage or must-revalidate.
        """
        self.assertEqual(self.reason(authorized=True, cache_control="max-age=5"), "authorization")
        for value in ("public, max-age=5", "s-maxage=5", "must-revalidate, max-age=5"):
            self.assertIsNone(self.reason(authorized=True, cache_control=value), value)


class ValidatorTests(SynchronousTestCase):
    """
    Entity-tag comparison.
    """

    def test_weak(self) -> None:
        """
        If-None-Match: weak comparison, lists (with commas in tags), C{*}.
        """
        self.assertTrue(etag_matches_weak(b'"a"', b'"a"'))
        self.assertTrue(etag_matches_weak(b'W/"a"', b'"a"'))
        self.assertTrue(etag_matches_weak(b'"x", W/"a"', b'W/"a"'))
        self.assertTrue(etag_matches_weak(b'"x,y", "a"', b'"a"'))
        self.assertFalse(etag_matches_weak(b'"x,y"', b'"x"'))
        self.assertTrue(etag_matches_weak(b"*", b'"a"'))
        self.assertFalse(etag_matches_weak(b'"a"', None))

    def test_strong(self) -> None:
        """
        If-Range: strong comparison only.
        """
        self.assertTrue(etag_matches_strong(b'"a"', b'"a"'))
        self.assertFalse(etag_matches_strong(b'W/"a"', b'"a"'))
        self.assertFalse(etag_matches_strong(b'"a"', b'W/"a"'))
        self.assertEqual(weakened(b'"a"'), b'W/"a"')
        self.assertEqual(weakened(b'W/"a"'), b'W/"a"')


class RangeTests(SynchronousTestCase):
    """
    L{parse_range}.
    """

    def test_forms(self) -> None:
        """
        First-last, open-ended, suffix; clamped to the length.
        """
        self.assertEqual(parse_range(b"bytes=0-9", 100), (0, 9))
        self.assertEqual(parse_range(b"bytes=90-", 100), (90, 99))
        self.assertEqual(parse_range(b"bytes=-10", 100), (90, 99))
        self.assertEqual(parse_range(b"bytes=-1000", 100), (0, 99))
        self.assertEqual(parse_range(b"bytes=50-1000", 100), (50, 99))

    def test_unsatisfiable_and_ignored(self) -> None:
        """
        Past the end or an empty suffix is unsatisfiable; several ranges,
        other units and garbage are ignored (the whole body is sent).
        """
        self.assertEqual(parse_range(b"bytes=100-", 100), "unsatisfiable")
        self.assertEqual(parse_range(b"bytes=-0", 100), "unsatisfiable")
        for value in (b"bytes=0-1,5-6", b"items=0-1", b"bytes=5-1", b"bytes=a-b", b"bytes", None, b"bytes=-"):
            self.assertIsNone(parse_range(value, 100), value)
