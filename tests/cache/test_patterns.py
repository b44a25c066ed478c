"""
Tests for L{phantom_frame.cache.patterns}.
"""

from __future__ import annotations

import random
import re

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.patterns import (
    MAX_PATTERN,
    InvalidationPattern,
    PathPattern,
    PatternError,
    RequestFilter,
)
from tests.cache.test_globs import Spy


class PathPatternTests(SynchronousTestCase):
    """
    Tests for L{PathPattern}.
    """

    def test_parsePath(self) -> None:
        """
        A pattern without a method has C{method} L{None}.
        """
        pattern = PathPattern.parse("/api/*")
        self.assertIsNone(pattern.method)
        self.assertEqual(pattern.path, "/api/*")
        self.assertEqual(str(pattern), "/api/*")

    def test_parseMethod(self) -> None:
        """
        C{METHOD PATH} names a method.
        """
        pattern = PathPattern.parse("POST /api/search")
        self.assertEqual(pattern.method, "POST")
        self.assertEqual(pattern.path, "/api/search")
        self.assertEqual(str(pattern), "POST /api/search")

    def test_parseStarPath(self) -> None:
        """
        A path may begin with C{*}.
        """
        self.assertEqual(PathPattern.parse("GET *.js").path, "*.js")

    def test_parseErrors(self) -> None:
        """
        Malformed patterns raise L{PatternError}, a L{ValueError}.
        """
        for text in ["", "  ", "api/*", "get /x", "GET api", "GET /a /b", "G!T /x"]:
            self.assertRaises(PatternError, PathPattern.parse, text)
        self.assertTrue(issubclass(PatternError, ValueError))

    def test_matchesAnyMethod(self) -> None:
        """
        A pattern without a method matches the path whatever the method.
        """
        pattern = PathPattern.parse("/x/*")
        self.assertTrue(pattern.matches("GET", "/x/1"))
        self.assertTrue(pattern.matches("POST", "/x/1"))
        self.assertFalse(pattern.matches("GET", "/y/1"))

    def test_matchesMethod(self) -> None:
        """
        A pattern naming a method matches only that method, and C{GET} also
        matches C{HEAD}.
        """
        pattern = PathPattern.parse("GET /x")
        self.assertTrue(pattern.matches("GET", "/x"))
        self.assertTrue(pattern.matches("HEAD", "/x"))
        self.assertFalse(pattern.matches("POST", "/x"))
        self.assertFalse(PathPattern.parse("POST /x").matches("GET", "/x"))

    def test_linearMatcher(self) -> None:
        """
        A path pattern is matched by the same searching matcher as every
        glob, and refuses a path longer than L{MAX_PATTERN} bytes.
        """
        path = Spy("/" + "a" * 40 + "b")
        self.assertFalse(PathPattern.parse("GET /" + "*a" * 30 + "*x*").matches("GET", path))
        self.assertEqual(len(path.finds), 31)
        self.assertRaises(PatternError, PathPattern.parse, "/" + "*a" * MAX_PATTERN)


class RequestFilterTests(SynchronousTestCase):
    """
    Tests for L{RequestFilter}.
    """

    def test_defaults(self) -> None:
        """
        Without patterns, C{GET} and C{HEAD} use the cache and other methods
        do not.
        """
        f = RequestFilter([], [])
        self.assertIsNone(f.bypass_reason("GET", "/anything"))
        self.assertIsNone(f.bypass_reason("HEAD", "/anything"))
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get"]:
            self.assertEqual(f.bypass_reason(method, "/anything"), "method")
        self.assertEqual(f.methods, ("GET", "HEAD"))

    def test_include(self) -> None:
        """
        With a non-empty include list, only matching paths use the cache.
        """
        f = RequestFilter(["/api/*", "*.css"], [])
        self.assertIsNone(f.bypass_reason("GET", "/api/users"))
        self.assertIsNone(f.bypass_reason("GET", "/static/site.css"))
        self.assertEqual(f.bypass_reason("GET", "/about"), "not-included")

    def test_exclude(self) -> None:
        """
        Paths matching an exclude pattern do not use the cache.
        """
        f = RequestFilter([], ["/admin/*"])
        self.assertEqual(f.bypass_reason("GET", "/admin/x"), "excluded")
        self.assertIsNone(f.bypass_reason("GET", "/admins"))

    def test_pathParameters(self) -> None:
        """
        A path with C{;parameters} is matched as it is and without them (as
        a servlet container reads it): excluded when either form is,
        included only when both are.
        """
        f = RequestFilter([], ["/private-area", "/private-area/*"])
        for path in ["/private-area;x/x.css", "/private-area;jsessionid=1", "/private-area/x.css;v=2"]:
            self.assertEqual(f.bypass_reason("GET", path), "excluded", path)
        self.assertIsNone(f.bypass_reason("GET", "/public;x/x.css"))
        f = RequestFilter(["/public/*"], [])
        self.assertIsNone(f.bypass_reason("GET", "/public/a;v=1"))
        self.assertEqual(f.bypass_reason("GET", "/public;x/a"), "not-included")
        self.assertEqual(f.bypass_reason("GET", "/other;/public/a"), "not-included")

    def test_spelledPatterns(self) -> None:
        """
        Patterns are spelled as request paths are, so that C{/café/*} and
        C{/%7Euser/*} match the normal paths of those pages.
        """
        f = RequestFilter([], ["/café/*", "/%7euser/*", "GET /a%2fb"])
        self.assertEqual(f.bypass_reason("GET", "/caf%C3%A9/menu"), "excluded")
        self.assertEqual(f.bypass_reason("GET", "/~user/x"), "excluded")
        self.assertEqual(f.bypass_reason("GET", "/a%2Fb"), "excluded")
        self.assertEqual(PathPattern.parse("/café/*").path, "/caf%C3%A9/*")

    def test_excludeWins(self) -> None:
        """
        A path matching both an include and an exclude pattern is excluded.
        """
        f = RequestFilter(["/api/*"], ["/api/private/*"])
        self.assertIsNone(f.bypass_reason("GET", "/api/public/1"))
        self.assertEqual(f.bypass_reason("GET", "/api/private/1"), "excluded")

    def test_headAsGet(self) -> None:
        """
        C{HEAD} is matched as if it were C{GET}: a C{GET} include covers it
        and a C{GET} exclude excludes it.
        """
        f = RequestFilter(["GET /x/*"], ["GET /x/no"])
        self.assertIsNone(f.bypass_reason("HEAD", "/x/yes"))
        self.assertEqual(f.bypass_reason("HEAD", "/x/no"), "excluded")
        self.assertEqual(f.bypass_reason("HEAD", "/y"), "not-included")

    def test_methodPatternsOnlyForThatMethod(self) -> None:
        """
        An include naming C{GET} does not include other methods, and an
        exclude naming C{POST} leaves C{GET} alone.
        """
        f = RequestFilter(["GET /x", "POST /s"], ["POST /x"])
        self.assertIsNone(f.bypass_reason("GET", "/x"))
        self.assertEqual(f.bypass_reason("GET", "/s"), "not-included")
        self.assertEqual(f.bypass_reason("POST", "/x"), "excluded")

    def test_otherMethodExplicitInclude(self) -> None:
        """
        A method other than C{GET} and C{HEAD} uses the cache only where an
        include pattern names it.
        """
        f = RequestFilter(["POST /api/search", "/api/*"], [])
        self.assertIsNone(f.bypass_reason("POST", "/api/search"))
        self.assertEqual(f.bypass_reason("PUT", "/api/search"), "method")
        self.assertEqual(f.methods, ("GET", "HEAD", "POST"))

    def test_unnamedPatternsCoverEnabledMethods(self) -> None:
        """
        Patterns without a method apply to a method the include list
        enabled, excludes included.
        """
        f = RequestFilter(["POST /api/search", "/api/*"], ["/api/secret"])
        self.assertIsNone(f.bypass_reason("POST", "/api/other"))
        self.assertEqual(f.bypass_reason("POST", "/api/secret"), "excluded")
        self.assertEqual(f.bypass_reason("POST", "/else"), "not-included")

    def test_methodCheckedFirst(self) -> None:
        """
        A method that may not use the cache gives C{"method"}, whatever the
        patterns.
        """
        f = RequestFilter(["/x"], ["/x"])
        self.assertEqual(f.bypass_reason("DELETE", "/x"), "method")

    def test_invalidPattern(self) -> None:
        """
        A malformed pattern raises L{PatternError} at construction.
        """
        self.assertRaises(PatternError, RequestFilter, ["nope"], [])
        self.assertRaises(PatternError, RequestFilter, [], ["GET"])

    def test_linearMatcher(self) -> None:
        """
        Include and exclude patterns are matched by the searching matcher:
        thirty stars against a near miss cost one search per literal.
        """
        near = "/" + "*a" * 30 + "*x*"
        f = RequestFilter([near], [near])
        path = Spy("/" + "a" * 40 + "b")
        self.assertEqual(f.bypass_reason("GET", path), "not-included")
        self.assertEqual(len(path.finds), 62)
        self.assertRaises(PatternError, RequestFilter, ["/" + "*a" * MAX_PATTERN], [])

    def test_manyPatterns(self) -> None:
        """
        Hundreds of patterns are combined: every one is honoured.
        """
        include = [f"/p{i}/*" for i in range(300)]
        f = RequestFilter(include, ["/p7/x"])
        self.assertIsNone(f.bypass_reason("GET", "/p299/a/b"))
        self.assertIsNone(f.bypass_reason("GET", "/p0/"))
        self.assertEqual(f.bypass_reason("GET", "/p7/x"), "excluded")
        self.assertEqual(f.bypass_reason("GET", "/p300/a"), "not-included")


_DEFAULT_KEY = re.compile(r"([A-Z][A-Z0-9_-]*):(?:(//[^/]*)(/.*)|(/(?!/).*))", re.DOTALL)


def _reference(pattern: str, key: str) -> bool:
    """
    The documented invalidation rules, read literally: a key of the
    default form is C{METHOD:[//HOST]/PATH[?QUERY]}; without a C{?} in the
    pattern the query is cut off; a pattern naming a host sees the host,
    one starting with a single C{/} the path, any other the key without its
    host; custom keys are matched whole (except by C{//} patterns).
    """
    glob = ".*".join(re.escape(part) for part in pattern.split("*"))
    parts = _DEFAULT_KEY.fullmatch(key)
    if parts is None:
        if pattern.startswith("//"):
            return False
        subject = key if "?" in pattern else key.split("?", 1)[0]
        return re.fullmatch(glob, subject, re.DOTALL) is not None
    method = parts.group(1)
    host = parts.group(2) or ""
    rest = parts.group(3) if parts.group(2) is not None else parts.group(4)
    if "?" not in pattern:
        rest = rest.split("?", 1)[0]
    if pattern.startswith("//"):
        if parts.group(2) is None:
            return False
        subject = host + rest
    elif pattern.startswith("/"):
        subject = rest
    elif re.match(r"[A-Z][A-Z0-9_-]*://", pattern):
        subject = method + ":" + host + rest
    else:
        subject = method + ":" + rest
    return re.fullmatch(glob, subject, re.DOTALL) is not None


class InvalidationPatternTests(SynchronousTestCase):
    """
    Tests for L{InvalidationPattern}.
    """

    def test_slashMatchesAnyMethod(self) -> None:
        """
        A pattern starting with C{/} matches the path part of keys of every
        method, query included.
        """
        pattern = InvalidationPattern("/api/*")
        self.assertTrue(pattern.matches("GET:/api/x"))
        self.assertTrue(pattern.matches("POST:/api/y?z=1"))
        self.assertTrue(pattern.matches("M-SEARCH:/api/"))
        self.assertFalse(pattern.matches("GET:/other/api/x"))
        self.assertFalse(pattern.matches("GET:/api"))

    def test_slashExact(self) -> None:
        """
        A pattern without a star matches one path, for every method and
        whatever the key's query (it has no C{?} of its own).
        """
        pattern = InvalidationPattern("/about")
        self.assertTrue(pattern.matches("GET:/about"))
        self.assertTrue(pattern.matches("HEAD:/about"))
        self.assertTrue(pattern.matches("GET:/about?x=1"))
        self.assertTrue(pattern.matches("GET://example.com/about?x=1"))
        self.assertFalse(pattern.matches("GET:/about/x"))
        self.assertFalse(pattern.matches("GET:/aboutx?about"))

    def test_queryInPattern(self) -> None:
        """
        A pattern with a C{?} matches the key's query too.
        """
        pattern = InvalidationPattern("/isr?_rsc=*")
        self.assertTrue(pattern.matches("GET:/isr?_rsc=1"))
        self.assertTrue(pattern.matches("GET://a.example/isr?_rsc=2"))
        self.assertFalse(pattern.matches("GET:/isr"))
        self.assertFalse(pattern.matches("GET:/isr?page=1"))
        exact = InvalidationPattern("GET:/a?x=1")
        self.assertTrue(exact.matches("GET://a.example/a?x=1"))
        self.assertFalse(exact.matches("GET:/a?x=12"))

    def test_starDoesNotReachIntoQuery(self) -> None:
        """
        Without a C{?} in the pattern, a star matches within the path only:
        C{/a*b} does not match C{/a?x=b}.
        """
        for text in ("/a*b", "GET:/a*b", "*a*b"):
            pattern = InvalidationPattern(text)
            self.assertFalse(pattern.matches("GET:/a?x=b"), text)
            self.assertTrue(pattern.matches("GET:/a/b?x=1"), text)

    def test_hostsIgnoredUnlessNamed(self) -> None:
        """
        Patterns that name no host match the keys of every host, as if the
        host were not in them.
        """
        keys = ["GET://a.example/api/x", "GET://b.example:8080/api/x", "GET:/api/x"]
        for text in ("/api/*", "GET:/api/*", "*/api/*", "GET:/api/x", "*x", "*"):
            pattern = InvalidationPattern(text)
            for key in keys:
                self.assertTrue(pattern.matches(key), (text, key))
        self.assertFalse(InvalidationPattern("POST:/api/*").matches(keys[0]))
        self.assertFalse(InvalidationPattern("*example*").matches(keys[0]))

    def test_namedHost(self) -> None:
        """
        C{//HOST/...} names a host for any method, C{METHOD://HOST/...} for
        one method; the host is a glob; host-less keys and custom keys do
        not match.
        """
        anyMethod = InvalidationPattern("//a.example/api/*")
        self.assertTrue(anyMethod.matches("GET://a.example/api/x?y=1"))
        self.assertTrue(anyMethod.matches("POST://a.example/api/"))
        for key in ["GET://b.example/api/x", "GET:/api/x", "//a.example/api/x", "GET://a.example:81/api/x"]:
            self.assertFalse(anyMethod.matches(key), key)
        one = InvalidationPattern("GET://*.example/*")
        self.assertTrue(one.matches("GET://a.example/x"))
        self.assertTrue(one.matches("GET://b.example/"))
        self.assertFalse(one.matches("HEAD://a.example/x"))
        self.assertFalse(one.matches("GET:/x"))

    def test_spelling(self) -> None:
        """
        The path of a pattern is spelled as request paths are: non-ASCII
        characters encoded, encoded unreserved ones decoded; the query is
        left as it is, and so are patterns that are not path-shaped.
        """
        self.assertTrue(InvalidationPattern("/café/*").matches("GET:/caf%C3%A9/menu"))
        self.assertTrue(InvalidationPattern("GET:/%7euser").matches("GET://h.example/~user"))
        self.assertTrue(InvalidationPattern("//h.example/caf%c3%a9").matches("GET://h.example/caf%C3%A9"))
        self.assertTrue(InvalidationPattern("/s?q=%7e").matches("GET:/s?q=%7e"))
        self.assertTrue(InvalidationPattern("tenant|é").matches("tenant|é"))

    def test_slashCustomKey(self) -> None:
        """
        A custom key not of the form C{METHOD:/...} is matched whole.
        """
        pattern = InvalidationPattern("/api/*")
        self.assertTrue(pattern.matches("/api/x"))
        self.assertFalse(pattern.matches("tenant:/api/x"))
        self.assertFalse(pattern.matches("v1|/api/x"))

    def test_methodPrefix(self) -> None:
        """
        C{GET:/api/*} matches only C{GET} keys.
        """
        pattern = InvalidationPattern("GET:/api/*")
        self.assertTrue(pattern.matches("GET:/api/x?y=1"))
        self.assertFalse(pattern.matches("POST:/api/x"))

    def test_leadingStar(self) -> None:
        """
        C{*/users/*} matches C{GET:/v1/users/7}.
        """
        pattern = InvalidationPattern("*/users/*")
        self.assertTrue(pattern.matches("GET:/v1/users/7"))
        self.assertTrue(pattern.matches("POST:/users/"))
        self.assertFalse(pattern.matches("GET:/v1/user/7"))

    def test_everything(self) -> None:
        """
        C{*} matches every key, custom keys and the empty key included.
        """
        pattern = InvalidationPattern("*")
        for key in ["GET:/", "POST:/x?y", "custom", ""]:
            self.assertTrue(pattern.matches(key))

    def test_literal(self) -> None:
        """
        C{?} and C{.} in an invalidation pattern are literal.
        """
        pattern = InvalidationPattern("GET:/a.html?x=1")
        self.assertTrue(pattern.matches("GET:/a.html?x=1"))
        self.assertFalse(pattern.matches("GET:/aXhtml?x=1"))

    def test_empty(self) -> None:
        """
        An empty pattern raises L{PatternError}.
        """
        self.assertRaises(PatternError, InvalidationPattern, "")

    def test_slashMethodForm(self) -> None:
        """
        For a pattern starting with C{/}, a key's prefix before the first
        colon must be an upper-case method for the rest to be matched.
        """
        pattern = InvalidationPattern("/a*")
        self.assertTrue(pattern.matches("GET:/a:b"))
        self.assertTrue(pattern.matches("M_1-X:/a"))
        for key in ["get:/a", ":/a", "1GET:/a", "GET:a/a", "GET/a", "GET:", "G T:/a"]:
            self.assertFalse(pattern.matches(key), key)

    def test_linearMatcher(self) -> None:
        """
        A pattern of thirty stars against a near-miss key costs one search
        per literal.
        """
        key = Spy("GET:/" + "a" * 40 + "b")
        self.assertFalse(InvalidationPattern("/" + "*a" * 30 + "*x*").matches(key))
        # The method's colon, the query's "?", then one per literal.
        self.assertEqual(len(key.finds), 2 + 31)
        self.assertEqual(key.finds[0], (0, 3))

    def test_prefixRoute(self) -> None:
        """
        A C{/section/*} pattern is decided by prefix checks: the only search
        is for the key's first colon.
        """
        pattern = InvalidationPattern("/api/*")
        for text, expected in [("GET:/api/x", True), ("GET:/other", False), ("/api/x", True)]:
            key = Spy(text)
            self.assertEqual(pattern.matches(key), expected)
            self.assertLessEqual(len(key.finds), 1)

    def test_tooLong(self) -> None:
        """
        A pattern longer than L{MAX_PATTERN} bytes raises L{PatternError} (a
        L{ValueError}) at once, without echoing the pattern.
        """
        error = self.assertRaises(PatternError, InvalidationPattern, "/u" + "*a" * 200000)
        self.assertLess(len(str(error)), 100)
        self.assertTrue(InvalidationPattern("/" + "a" * (MAX_PATTERN - 1)).matches("GET:/" + "a" * (MAX_PATTERN - 1)))

    def test_agreesWithReference(self) -> None:
        """
        On random patterns and keys the matcher agrees with a plain
        backtracking translation of the documented rules.
        """
        rng = random.Random(7)
        for _ in range(6000):
            pattern = "".join(rng.choice("ab*/:G?") for _ in range(rng.randint(1, 8)))
            key = "".join(rng.choice("ab/:G?") for _ in range(rng.randint(0, 10)))
            self.assertEqual(
                InvalidationPattern(pattern).matches(key), _reference(pattern, key), (pattern, key)
            )
        for key in ["GET://a/b?c", "GET:/a/b?c", "G://a/", "G:///a", "G:////a?b", "G://a"]:
            for pattern in ["/*", "//*", "//a/*", "G://a/*", "G:/*", "*a*", "/a*?c", "*?*"]:
                self.assertEqual(
                    InvalidationPattern(pattern).matches(key), _reference(pattern, key), (pattern, key)
                )

    def test_repr(self) -> None:
        """
        The representation shows the pattern.
        """
        self.assertEqual(repr(InvalidationPattern("/x")), "InvalidationPattern('/x')")
