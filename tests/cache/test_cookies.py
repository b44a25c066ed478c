"""
Tests for L{phantom_frame.cache.cookies}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.cookies import CookieRule, marked_shareable


class MarkedShareableTests(SynchronousTestCase):
    """
    Tests for L{marked_shareable}.
    """

    def test_marked(self) -> None:
        """
        C{public}, C{s-maxage} and a C{CDN-Cache-Control} or
        C{Surrogate-Control} lifetime mark a response shareable, in any case
        of names and directives.
        """
        for headers in [
            [(b"Cache-Control", b"public, max-age=31536000, immutable")],
            [(b"cache-control", b"s-maxage=31536000, stale-while-revalidate")],
            [(b"Cache-Control", b"max-age=0"), (b"Cache-Control", b"S-MAXAGE=0")],
            [(b"CDN-Cache-Control", b"max-age=60")],
            [(b"Surrogate-Control", b"max-age=3600, content=\"ESI/1.0\"")],
            [(b"cdn-cache-control", b"s-maxage=5")],
        ]:
            self.assertTrue(marked_shareable(headers), headers)

    def test_notMarked(self) -> None:
        """
        Without those, or with malformed lifetimes, a response is not
        marked shareable: C{max-age} alone is for any cache, not a
        statement that the answer is the same for every visitor.
        """
        for headers in [
            [],
            [(b"Content-Type", b"application/json")],
            [(b"Cache-Control", b"max-age=60")],
            [(b"Cache-Control", b"s-maxage=soon, publicity")],
            [(b"CDN-Cache-Control", b"no-store")],
            [(b"Surrogate-Control", b"max-age=-1")],
            [(b"Surrogate-Control", b"max-age=\xd9\xa1")],
            [(b"X-Cache-Control", b"public")],
        ]:
            self.assertFalse(marked_shareable(headers), headers)


class CookieRuleTests(SynchronousTestCase):
    """
    Tests for L{CookieRule}.
    """

    def test_strict(self) -> None:
        """
        Under the strict policy any cookie makes a request private; no
        cookie, or an empty header, does not.
        """
        rule = CookieRule(True)
        self.assertTrue(rule.private("session=abc"))
        self.assertTrue(rule.private("flag"))
        self.assertFalse(rule.private(None))
        self.assertFalse(rule.private(""))
        self.assertFalse(rule.private(" ; ;"))

    def test_ignored(self) -> None:
        """
        Cookies named by C{ignore_cookies} globs never make a request
        private; any other one does, in any header.
        """
        rule = CookieRule(True, ["_ga*", "_gid"])
        self.assertFalse(rule.private("_ga=GA1.2.3; _gid=GA1.2; _ga_XYZ=1"))
        self.assertTrue(rule.private("_ga=GA1.2.3; session=abc"))
        self.assertTrue(rule.private("_ga=1, session=abc"))
        self.assertTrue(rule.private("_gidx=1"))
        self.assertTrue(rule.private("x_ga=1"))
        self.assertFalse(rule.private(" _gid = 1 ;"))

    def test_ignorePolicy(self) -> None:
        """
        Under the ignore policy no cookie makes a request private.
        """
        rule = CookieRule(False)
        self.assertFalse(rule.private("session=abc"))
        self.assertFalse(rule.strict)
