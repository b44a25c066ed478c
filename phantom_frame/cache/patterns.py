"""
Globs for C{include_paths}, C{exclude_paths} and invalidation.

A glob's C{*} matches any run of characters, C{/} included, anywhere in the
pattern; every other character stands for itself (C{?}, C{.} and C{[} are not
special). Globs always match the whole subject.

Globs are compiled to regular expressions that never backtrack
catastrophically: each literal between two stars is placed at its leftmost
occurrence inside a lookahead (which the regular expression engine does not
re-enter), so a match costs time linear in the subject for a given pattern,
whatever the request path holds. Leftmost placement is exact for globs whose
only wildcard is C{*}.
"""

from __future__ import annotations

import itertools
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import attr

_METHOD = "[A-Z][A-Z0-9_-]*"
_METHOD_RE = re.compile(_METHOD)


class PatternError(ValueError):
    """
    A path or invalidation pattern is malformed.
    """


def _glob_source(text: str, groups: Iterator[int]) -> str:
    """
    Translate a glob to regular expression source (without flags).

    @param text: the glob.
    @param groups: numbers for the named groups the translation needs, unique
        across every glob combined into one expression.
    @return: the source, to be matched with C{fullmatch} and C{re.DOTALL}.
    """
    parts = text.split("*")
    if len(parts) == 1:
        return re.escape(text)
    head, middle, tail = parts[0], parts[1:-1], parts[-1]
    source = [re.escape(head)]
    for literal in middle:
        if not literal:
            # Consecutive stars are one star.
            continue
        name = f"g{next(groups)}"
        # Emulates an atomic group: find the literal's leftmost occurrence,
        # capture it in a lookahead, then consume exactly that.
        source.append(f"(?=(?P<{name}>.*?{re.escape(literal)}))(?P={name})")
    source.append(".*")
    source.append(re.escape(tail))
    return "".join(source)


def _combine(globs: Sequence[str]) -> re.Pattern[str]:
    """
    Compile several globs into one expression matching any of them.

    @param globs: the globs; at least one.
    @return: a compiled expression to use with C{fullmatch}.
    """
    groups = itertools.count()
    sources: List[str] = []
    for text in globs:
        source = _glob_source(text, groups)
        if source not in sources:
            sources.append(source)
    return re.compile("|".join(f"(?:{source})" for source in sources), re.DOTALL)


def compile_glob(text: str) -> re.Pattern[str]:
    """
    Compile a glob.

    @param text: the glob; C{*} matches any run of characters (C{/}
        included), everything else is literal.
    @return: a compiled regular expression; match it with C{fullmatch}.
    """
    return _combine([text])


@attr.s(frozen=True, auto_attribs=True)
class PathPattern:
    """
    One C{include_paths} or C{exclude_paths} entry: C{"PATH"} or
    C{"METHOD PATH"}.

    @ivar method: the method the pattern names, or L{None} when it names none.
    @ivar path: the path glob.
    """

    method: Optional[str]
    path: str
    _regex: re.Pattern[str] = attr.ib(
        init=False,
        eq=False,
        repr=False,
        default=attr.Factory(lambda self: compile_glob(self.path), takes_self=True),
    )

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        """
        Parse a pattern.

        @param text: C{"PATH"} or C{"METHOD PATH"}, where METHOD is an
            upper-case token and PATH begins with C{/} or C{*}; surrounding
            whitespace is ignored.
        @return: the pattern.
        @raise PatternError: when C{text} has another form.
        """
        words = text.split()
        if len(words) == 1:
            method, path = None, words[0]
        elif len(words) == 2:
            method, path = words
            if not _METHOD_RE.fullmatch(method):
                raise PatternError(
                    f"{text!r}: expected METHOD PATH with an upper-case method"
                )
        else:
            raise PatternError(f"{text!r}: expected PATH or METHOD PATH")
        if not path.startswith(("/", "*")):
            raise PatternError(f"{text!r}: the path must begin with / or *")
        return cls(method, path)

    def matches(self, method: str, path: str) -> bool:
        """
        Whether a request matches.

        A pattern without a method matches any method; a pattern naming
        C{GET} also matches C{HEAD}, which is answered from the C{GET} entry.

        @param method: the request method.
        @param path: the prefix-stripped path, without the query.
        @return: L{True} when the pattern matches.
        """
        if self.method is not None and self.method != method:
            if not (self.method == "GET" and method == "HEAD"):
                return False
        return self._regex.fullmatch(path) is not None

    def __str__(self) -> str:
        """
        @return: the pattern in its configuration form.
        """
        if self.method is None:
            return self.path
        return f"{self.method} {self.path}"


@attr.s(frozen=True, auto_attribs=True)
class _MethodRule:
    """
    The compiled include and exclude lists that apply to one method.

    @ivar include: the expression a path must match, or L{None} for every
        path (or none, when C{restricted}).
    @ivar restricted: whether the include list is non-empty.
    @ivar exclude: the expression excluded paths match, or L{None}.
    """

    include: Optional[re.Pattern[str]]
    restricted: bool
    exclude: Optional[re.Pattern[str]]


class RequestFilter:
    """
    Decides, from C{include_paths} and C{exclude_paths}, which requests may
    use the cache.

    C{GET} and C{HEAD} are cacheable by default, C{HEAD} being matched as if
    it were C{GET}. Another method is cacheable only where an include pattern
    names it explicitly. A pattern without a method applies to every
    cacheable method. Exclude patterns win over include patterns; an empty
    include list includes every path.

    Everything is compiled up front: a request costs one dictionary look-up
    and at most two regular expression matches.
    """

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        """
        @param include: the C{include_paths} patterns.
        @param exclude: the C{exclude_paths} patterns.
        @raise PatternError: when a pattern is malformed.
        """
        includes = [PathPattern.parse(text) for text in include]
        excludes = [PathPattern.parse(text) for text in exclude]
        enabled = {"GET", "HEAD"}
        enabled.update(p.method for p in includes if p.method is not None)
        self._rules: Dict[str, _MethodRule] = {}
        for method in enabled:
            names = {"GET", "HEAD"} if method == "HEAD" else {method}
            inc = [p.path for p in includes if p.method is None or p.method in names]
            exc = [p.path for p in excludes if p.method is None or p.method in names]
            self._rules[method] = _MethodRule(
                include=_combine(inc) if inc else None,
                restricted=bool(includes),
                exclude=_combine(exc) if exc else None,
            )

    def bypass_reason(self, method: str, path: str) -> Optional[str]:
        """
        Why a request must not use the cache.

        @param method: the request method, as received.
        @param path: the prefix-stripped path, without the query.
        @return: L{None} when the request may use the cache; otherwise
            C{"method"} (the method is not cacheable), C{"excluded"} (an
            exclude pattern matched) or C{"not-included"} (the include list
            is not empty and no include pattern matched).
        """
        rule = self._rules.get(method)
        if rule is None:
            return "method"
        if rule.exclude is not None and rule.exclude.fullmatch(path) is not None:
            return "excluded"
        if rule.restricted and (
            rule.include is None or rule.include.fullmatch(path) is None
        ):
            return "not-included"
        return None

    @property
    def methods(self) -> Tuple[str, ...]:
        """
        @return: the cacheable methods, sorted.
        """
        return tuple(sorted(self._rules))


class InvalidationPattern:
    """
    A pattern naming cache keys to invalidate.

    The pattern is a glob matched against whole keys. A pattern that begins
    with C{/} matches the path part of keys for any method: for a key of the
    form C{METHOD:/...} it is matched against what follows the first C{:}; a
    key not of that form (a custom key) is matched whole. So C{"/api/*"}
    matches C{GET:/api/x} and C{POST:/api/y?z=1}, C{"GET:/api/*"} only
    C{GET} keys, C{"*/users/*"} matches C{GET:/v1/users/7}, and C{"*"} every
    key.

    @ivar text: the pattern as given.
    """

    def __init__(self, text: str) -> None:
        """
        @param text: the pattern.
        @raise PatternError: when C{text} is empty.
        """
        if not text:
            raise PatternError("an invalidation pattern must not be empty")
        self.text = text
        source = _glob_source(text, itertools.count())
        if text.startswith("/"):
            source = f"(?:{_METHOD}:(?=/))?(?:{source})"
        self._regex = re.compile(source, re.DOTALL)

    def matches(self, key: str) -> bool:
        """
        Whether a key matches.

        @param key: a cache key.
        @return: L{True} when the pattern matches it.
        """
        return self._regex.fullmatch(key) is not None

    def __repr__(self) -> str:
        """
        @return: a readable representation.
        """
        return f"InvalidationPattern({self.text!r})"
