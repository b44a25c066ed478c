"""
RFC details of L{phantom_frame.cache.freshness} and L{phantom_frame.cache.policy}:
HTTP-date forms (RFC 9110 §5.6.7), a missing or invalid C{Date}, the
statuses a shared cache may store (RFC 9110 §15.1, RFC 9111 §3),
C{must-understand} (RFC 9111 §5.2.2.3), C{CDN-Cache-Control} (RFC 9213)
and what forbids serving stale (RFC 9111 §4.2.4).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.freshness import (
    HEURISTIC_STATUSES,
    ResponseDirectives,
    freshness_lifetime,
    http_bypass_reason,
    parse_http_date,
)
from phantom_frame.cache.policy import MAIN_STATUSES, response_bypass_reason
from phantom_frame.cache.strategy import CacheStrategy

EPOCH = 784111777.0
DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"


def pairs(**headers: str):
    """
    @return: C{(name, value)} header pairs (C{_} in names for C{-}).
    """
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


def lifetime(status: int = 200, response_time=None, **headers: str) -> float:
    """
    @return: L{freshness_lifetime} of a response with these headers.
    """
    h = pairs(**headers)
    return freshness_lifetime(status, h, ResponseDirectives.parse(h), response_time)


def storable(status: int, **headers: str):
    """
    @return: why the http policy would not store this response, or C{None}.
    """
    h = pairs(**headers)
    return response_bypass_reason(status, h, CacheStrategy.ALL, check_status=False) or http_bypass_reason(
        status, h, ResponseDirectives.parse(h), False
    )


class HTTPDateTests(SynchronousTestCase):
    """
    IMF-fixdate exactly as its grammar says; the obsolete forms as
    recipients must accept them.
    """

    def test_imf_fixdate_is_exact(self) -> None:
        """
        Extra spaces, a one-digit day, a missing comma, a two-digit year or
        another zone are not an IMF-fixdate.
        """
        for value in (
            b"Thu, 18  Aug  2050 02:01:18 GMT",
            b"Thu, 18 Aug 2050  02:01:18 GMT",
            b"Thu,18 Aug 2050 02:01:18 GMT",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun 06 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 94 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 08:49:37 +0000",
            b"Sun, 06 Nov 1994 8:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 31 Feb 1994 08:49:37 GMT",
            b"Fun, 06 Nov 1994 08:49:37 GMT",
        ):
            self.assertIsNone(parse_http_date(value), value)

    def test_case_insensitive_names(self) -> None:
        """
        C{GMT}, the day and the month may come in any case.
        """
        for value in (b"Sun, 06 Nov 1994 08:49:37 gMT", b"SUN, 06 NOV 1994 08:49:37 gmt", DATE):
            self.assertEqual(parse_http_date(value), EPOCH, value)

    def test_obsolete_forms(self) -> None:
        """
        RFC 850 (long day name, two-digit year) and asctime (a space-padded
        day, or two digits) are read.
        """
        self.assertEqual(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), EPOCH)
        self.assertEqual(parse_http_date(b"Sun Nov  6 08:49:37 1994"), EPOCH)
        self.assertEqual(parse_http_date(b"Sun Nov 06 08:49:37 1994"), EPOCH)
        for value in (b"Sun, 06-Nov-94 08:49:37 GMT", b"Sunday, 06-Nov-1994 08:49:37 GMT", b"Sun Nov 6 08:49:37 1994"):
            self.assertIsNone(parse_http_date(value), value)

    def test_leap_second(self) -> None:
        """
        Second 60 (a leap second) is a valid time of day.
        """
        self.assertEqual(parse_http_date(b"Sun, 06 Nov 1994 08:49:60 GMT"), EPOCH + 23)


class InvalidDateTests(SynchronousTestCase):
    """
    A missing or invalid C{Date} is the time the response was received
    (RFC 9110 §6.6.1), never a reason for zero freshness.
    """

    def test_expires(self) -> None:
        """
        C{Expires} counts from when the response was received.
        """
        expires = "Sun, 06 Nov 1994 09:49:37 GMT"
        self.assertEqual(lifetime(expires=expires, date="garbage", response_time=EPOCH), 3600)
        self.assertEqual(lifetime(expires=expires, response_time=EPOCH + 600), 3000)

    def test_heuristic(self) -> None:
        """
        So does the heuristic lifetime.
        """
        modified = "Sun, 06 Nov 1994 07:49:37 GMT"
        self.assertEqual(lifetime(last_modified=modified, date="Sun, 06  Nov 1994", response_time=EPOCH), 360)


class StatusTests(SynchronousTestCase):
    """
    http policy: any final status with explicit freshness may be stored;
    heuristics for the heuristically cacheable statuses and C{public}.
    """

    def test_explicit_freshness_any_status(self) -> None:
        """
        Unusual, client-error and server-error statuses with C{max-age} are
        stored.
        """
        for status in (201, 299, 400, 403, 499, 500, 502, 503, 504, 599):
            self.assertIsNone(storable(status, cache_control="max-age=100000"), status)
            self.assertEqual(lifetime(status, cache_control="max-age=100000"), 100000, status)
        self.assertIsNone(storable(599, expires="Sun, 06 Nov 1994 09:49:37 GMT", date=DATE.decode()))

    def test_heuristics(self) -> None:
        """
        RFC 9110 §15.1's list (501 included) gets a heuristic lifetime, and
        so does anything marked C{public}; other statuses get none.
        """
        self.assertEqual(HEURISTIC_STATUSES, {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
        modified = "Sun, 06 Nov 1994 07:49:37 GMT"
        self.assertEqual(lifetime(501, date=DATE.decode(), last_modified=modified), 360)
        self.assertIsNone(storable(501, date=DATE.decode(), last_modified=modified))
        self.assertEqual(lifetime(599, date=DATE.decode(), last_modified=modified, cache_control="public"), 360)
        self.assertIsNone(storable(599, date=DATE.decode(), last_modified=modified, cache_control="public"))
        self.assertEqual(lifetime(599, date=DATE.decode(), last_modified=modified), 0)
        self.assertEqual(storable(599, date=DATE.decode(), last_modified=modified), "no-freshness")
        self.assertEqual(storable(500, date=DATE.decode(), last_modified=modified), "no-freshness")

    def test_never_stored(self) -> None:
        """
        206 and 304 answers to a fill are never stored.
        """
        for status in (206, 304):
            self.assertEqual(storable(status, cache_control="max-age=60"), "status", status)

    def test_prerender_keeps_its_list(self) -> None:
        """
        The prerender policy's statuses do not change: 5xx, 304 and 206 are
        never stored, whatever their freshness.
        """
        self.assertEqual(MAIN_STATUSES, {200, 203, 300, 301, 308, 410})
        for status in (206, 304, 500, 503, 599, 204):
            self.assertEqual(
                response_bypass_reason(status, pairs(cache_control="max-age=60"), CacheStrategy.ALL), "status", status
            )


class DirectiveTests(SynchronousTestCase):
    """
    C{must-understand}, C{CDN-Cache-Control}, and what forbids stale.
    """

    def test_must_understand(self) -> None:
        """
        C{no-store, must-understand} is storable for a status whose rules
        phantom-frame knows, in both policies; not for an unknown status.
        """
        cc = "no-store, must-understand, max-age=60"
        self.assertIsNone(storable(200, cache_control=cc))
        self.assertIsNone(response_bypass_reason(200, pairs(cache_control=cc), CacheStrategy.ALL))
        self.assertEqual(storable(599, cache_control=cc), "no-store")
        self.assertEqual(storable(200, cache_control="no-store, max-age=60"), "no-store")

    def test_cdn_cache_control(self) -> None:
        """
        C{CDN-Cache-Control} replaces C{Cache-Control} and C{Expires} for
        every policy: a C{no-store} or C{private} there does not count.
        """
        for cc in ("no-store", "private"):
            headers = pairs(cache_control=cc, cdn_cache_control="max-age=60")
            self.assertIsNone(response_bypass_reason(200, headers, CacheStrategy.ALL), cc)
            self.assertIsNone(storable(200, cache_control=cc, cdn_cache_control="max-age=60"), cc)
        self.assertEqual(
            response_bypass_reason(200, pairs(cache_control="max-age=60", cdn_cache_control="no-store"), CacheStrategy.ALL),
            "no-store",
        )
        expires = "Sun, 06 Nov 1994 09:49:37 GMT"
        self.assertEqual(lifetime(expires=expires, date=DATE.decode(), cdn_cache_control="public"), 0)
        self.assertEqual(storable(599, expires=expires, date=DATE.decode(), cdn_cache_control="stale-if-error=5"), "no-freshness")

    def test_never_stale(self) -> None:
        """
        must-revalidate, proxy-revalidate, no-cache and s-maxage forbid
        serving stale; s-maxage with the response's own
        stale-while-revalidate does not.
        """
        for cc in ("max-age=5, must-revalidate", "max-age=5, proxy-revalidate", "no-cache", "s-maxage=5",
                   "s-maxage=5, stale-if-error=60", "s-maxage=5, must-revalidate, stale-while-revalidate=60"):
            self.assertTrue(ResponseDirectives.parse(pairs(cache_control=cc)).never_stale, cc)
        for cc in ("max-age=5", "max-age=5, stale-if-error=60", "s-maxage=5, stale-while-revalidate=60"):
            self.assertFalse(ResponseDirectives.parse(pairs(cache_control=cc)).never_stale, cc)
