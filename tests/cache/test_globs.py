"""
Tests for L{phantom_frame.cache.globs}.
"""

from __future__ import annotations

import random
import re
from types import MethodType
from typing import List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.globs import MAX_PATTERN, Glob, GlobSet, PatternError, compile_glob


def _matches(glob: str, subject: str) -> bool:
    """
    @return: whether C{glob} matches all of C{subject}.
    """
    return compile_glob(glob).matches(subject)


class Spy(str):
    """
    A string that records every search made in it: where each C{find}
    began and what it found.

    @ivar finds: C{(start, result)} per C{find} call.
    """

    finds: List[Tuple[int, int]]

    def __new__(cls, text: str) -> Spy:
        """
        @param text: the string's value.
        """
        spy = super().__new__(cls, text)
        spy.finds = []
        return spy

    def find(self, sub: str, start: Optional[int] = None, end: Optional[int] = None) -> int:  # type: ignore[override]
        """
        Search, and record the search.
        """
        found = super().find(sub, start, end)
        self.finds.append((0 if start is None else start, found))
        return found


class CompileGlobTests(SynchronousTestCase):
    """
    Tests for L{compile_glob}.
    """

    def test_starAcrossSegments(self) -> None:
        """
        C{/a/*x} matches C{/a/x/x}: the star spans a C{/} (the original
        only looked at the last segment and missed this).
        """
        self.assertTrue(_matches("/a/*x", "/a/x/x"))
        self.assertTrue(_matches("/a/*x", "/a/x"))
        self.assertFalse(_matches("/a/*x", "/a/x/y"))

    def test_starAtEnd(self) -> None:
        """
        A trailing star matches any rest, empty included.
        """
        self.assertTrue(_matches("/api/*", "/api/"))
        self.assertTrue(_matches("/api/*", "/api/v1/users/7"))
        self.assertFalse(_matches("/api/*", "/api"))
        self.assertFalse(_matches("/api/*", "/apix/1"))

    def test_starAtStart(self) -> None:
        """
        A leading star matches any beginning.
        """
        self.assertTrue(_matches("*.css", "/static/deep/site.css"))
        self.assertTrue(_matches("*.css", ".css"))
        self.assertFalse(_matches("*.css", "/site.css.map"))

    def test_starInMiddle(self) -> None:
        """
        Stars in the middle match any run, several segments included.
        """
        self.assertTrue(_matches("/users/*/posts", "/users/7/posts"))
        self.assertTrue(_matches("/users/*/posts", "/users/a/b/posts"))
        self.assertFalse(_matches("/users/*/posts", "/users/7/posts/1"))
        self.assertTrue(_matches("/a*b*c", "/aXbYbZc"))
        self.assertTrue(_matches("/a*b*c", "/abc"))

    def test_consecutiveStars(self) -> None:
        """
        Several stars in a row act as one.
        """
        self.assertTrue(_matches("/a/**/z", "/a/b/c/z"))
        self.assertTrue(_matches("**", ""))

    def test_literalCharacters(self) -> None:
        """
        C{?}, C{.}, C{[}, C{+} and C{\\} are literal.
        """
        self.assertTrue(_matches("/a?b=1", "/a?b=1"))
        self.assertFalse(_matches("/a?b", "/ab"))
        self.assertFalse(_matches("/a?b", "/axb"))
        self.assertTrue(_matches("/site.css", "/site.css"))
        self.assertFalse(_matches("/site.css", "/siteXcss"))
        self.assertTrue(_matches("/[x]+\\", "/[x]+\\"))
        self.assertFalse(_matches("/[x]", "/x"))

    def test_noStar(self) -> None:
        """
        A glob without a star matches only itself.
        """
        self.assertTrue(_matches("/about", "/about"))
        self.assertFalse(_matches("/about", "/about/"))

    def test_newline(self) -> None:
        """
        A star matches newlines too.
        """
        self.assertTrue(_matches("/a*", "/a\nb"))

    def test_agreesWithReference(self) -> None:
        """
        On random globs and subjects the compiled glob agrees with a plain
        backtracking translation.
        """
        rng = random.Random(4)
        for _ in range(3000):
            glob = "".join(rng.choice("ab*/") for _ in range(rng.randint(0, 7)))
            subject = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 9)))
            reference = ".*".join(re.escape(part) for part in glob.split("*"))
            self.assertEqual(
                _matches(glob, subject),
                re.fullmatch(reference, subject, re.DOTALL) is not None,
                (glob, subject),
            )

    def test_noBacktracking(self) -> None:
        """
        Thirty stars against a subject that almost matches (which a
        backtracking matcher tries in exponentially many ways) cost one
        search per literal, each starting where the previous one ended: the
        subject is scanned once.
        """
        glob = compile_glob("/" + "*a" * 30 + "*x*b")
        subject = Spy("/" + "a" * 60 + "b")
        self.assertFalse(glob.matches(subject))
        self.assertEqual(len(subject.finds), 31)
        starts = [start for start, _ in subject.finds]
        self.assertEqual(starts, list(range(1, 32)))
        self.assertEqual(subject.finds[-1][1], -1)

    def test_searchesOncePerLiteral(self) -> None:
        """
        A long glob against a long subject makes at most one search per
        literal, never going back: the work is bounded by
        O(len(pattern) * len(subject)).
        """
        glob = compile_glob("/u" + "*ab" * 1000)
        subject = Spy("/u" + "a" * 5000 + "bab")
        self.assertFalse(glob.matches(subject))
        self.assertEqual(subject.finds, [(2, 5001), (5003, -1)])
        subject = Spy("/u" + "ab" * 1000)
        self.assertTrue(glob.matches(subject))
        self.assertEqual(len(subject.finds), 999)
        self.assertEqual([start for start, _ in subject.finds], list(range(2, 2000, 2)))

    def test_tooShortSubject(self) -> None:
        """
        A subject shorter than the glob's literals is refused without any
        search.
        """
        subject = Spy("/uaaa")
        self.assertFalse(compile_glob("/u" + "*a" * 100).matches(subject))
        self.assertEqual(subject.finds, [])

    def test_start(self) -> None:
        """
        With C{start}, the glob matches the rest of the subject from there.
        """
        glob = compile_glob("/a*c")
        self.assertTrue(glob.matches("GET:/abc", 4))
        self.assertFalse(glob.matches("GET:/abc", 3))
        self.assertTrue(compile_glob("/x").matches("GET:/x", 4))
        self.assertFalse(compile_glob("/x").matches("GET:/xy", 4))
        self.assertFalse(compile_glob("/*/").matches("GET:/", 4))

    def test_longestPattern(self) -> None:
        """
        A glob of L{MAX_PATTERN} bytes (4 KiB) is accepted; one byte more is
        a L{PatternError}, counted in UTF-8 bytes, not characters.
        """
        self.assertEqual(MAX_PATTERN, 4096)
        self.assertTrue(_matches("*" * MAX_PATTERN, "x"))
        self.assertRaises(PatternError, compile_glob, "*" * (MAX_PATTERN + 1))
        self.assertRaises(PatternError, compile_glob, "/u" + "*a" * 200000)
        self.assertTrue(_matches("/" + "\u00e9" * 2047, "/" + "\u00e9" * 2047))
        self.assertRaises(PatternError, compile_glob, "/" + "\u00e9" * 2048)
        self.assertRaises(PatternError, compile_glob, "/" + "\ud800" * 2048)

    def test_repr(self) -> None:
        """
        The representation shows the glob.
        """
        self.assertEqual(repr(compile_glob("/a*")), "Glob('/a*')")


class GlobSetTests(SynchronousTestCase):
    """
    Tests for L{GlobSet}.
    """

    def test_matchesAny(self) -> None:
        """
        A subject matches when any of the globs does.
        """
        globs = GlobSet(Glob(t) for t in ["/a", "/b/*", "*.css", "/x*y", "/m*n*o"])
        for subject in ["/a", "/b/", "/b/c/d", "/s/site.css", "/xy", "/x/1/y", "/mno", "/m/n/o"]:
            self.assertTrue(globs.matches(subject), subject)
        for subject in ["/a/", "/b", "/site.cs", "/x/1", "/mo", ""]:
            self.assertFalse(globs.matches(subject), subject)
        self.assertFalse(GlobSet([]).matches("/a"))
        self.assertTrue(GlobSet([Glob("**")]).matches(""))

    def test_manyAffixes(self) -> None:
        """
        Many prefix and suffix globs, of several lengths, are all honoured.
        """
        globs = GlobSet(
            [Glob(f"/p{i}/*") for i in range(120)] + [Glob(f"*.e{i}") for i in range(120)] + [Glob("/x")]
        )
        for subject in ["/p0/", "/p119/a", "/p7/x.y", "a.e0", "/s/f.e119", "/x"]:
            self.assertTrue(globs.matches(subject), subject)
        for subject in ["/p120/", "/p1", "a.e120", "/x/", "e0", ""]:
            self.assertFalse(globs.matches(subject), subject)

    def test_fastRoutes(self) -> None:
        """
        Exact paths, prefix globs and suffix globs are matched without a
        search; only globs with a literal between stars, or with both a
        head and a tail, are searched.
        """
        globs = GlobSet(Glob(t) for t in ["/a", "/b/*", "*.css"])
        for text in ["/a", "/b/x", "/z.css", "/nope"]:
            subject = Spy(text)
            globs.matches(subject)
            self.assertEqual(subject.finds, [])
        for texts in (["/a", "/b"], ["/a/*", "/b/*"], ["*.css", "*.js"]):
            globs = GlobSet(Glob(t) for t in texts)
            self.assertNotEqual(type(globs.matches), MethodType, texts)
            self.assertTrue(globs.matches(texts[1].replace("*", "x")))
            self.assertFalse(globs.matches("/c"))
        globs = GlobSet(Glob(t) for t in ["/a", "/b/*"])
        self.assertEqual(type(globs.matches), MethodType)
        subject = Spy("/m/n/o")
        self.assertTrue(GlobSet([Glob("/m*n*o")]).matches(subject))
        self.assertEqual(len(subject.finds), 1)
