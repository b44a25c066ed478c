"""
Globs for C{include_paths}, C{exclude_paths} and invalidation.

A glob's C{*} matches any run of characters, C{/} included, anywhere in the
pattern; every other character stands for itself (C{?}, C{.} and C{[} are not
special). Globs always match the whole subject.

A glob is matched without backtracking: the literals between its stars are
placed, left to right, at their leftmost occurrence after the previous one
(which is exact when the only wildcard is C{*}). Each literal is searched for
once, from where the previous one ended, so a match costs at most one pass
over the subject per literal and never more than
O(len(pattern) * len(subject)), whatever the request path or key holds.
Globs longer than L{MAX_PATTERN} bytes are refused.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import attr

_METHOD = "[A-Z][A-Z0-9_-]*"
_METHOD_RE = re.compile(_METHOD)
_COMMON_METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])

#: The longest glob accepted, in bytes of UTF-8.
MAX_PATTERN = 4096


class PatternError(ValueError):
    """
    A path or invalidation pattern is malformed.
    """


def _matcher(head: str, middle: Optional[Tuple[str, ...]], tail: str) -> Callable[[str, int], bool]:
    """
    Build the function that matches one glob, specialised to its shape.

    @param head: the literal before the first star (the whole glob when it
        has none).
    @param middle: the non-empty literals between stars, or L{None} when
        the glob has no star.
    @param tail: the literal after the last star.
    @return: a function of C{(subject, start)} telling whether the glob
        matches all of C{subject[start:]}.
    """
    if middle is None:
        size = len(head)
        return lambda subject, start: len(subject) - start == size and subject.startswith(head, start)
    least = len(head) + len(tail) + sum(len(literal) for literal in middle)
    if not middle:
        if not tail:
            return lambda subject, start: subject.startswith(head, start)
        if not head:
            return lambda subject, start: len(subject) - start >= least and subject.endswith(tail)
        return lambda subject, start: (
            len(subject) - start >= least and subject.startswith(head, start) and subject.endswith(tail)
        )
    skip = len(head)
    cut = len(tail)

    def search(subject: str, start: int) -> bool:
        end = len(subject) - cut
        if end - start < least - cut or not subject.startswith(head, start) or not subject.endswith(tail):
            return False
        position = start + skip
        for literal in middle:
            position = subject.find(literal, position, end)
            if position < 0:
                return False
            position += len(literal)
        return True

    return search


class Glob:
    """
    A compiled glob: a head, the literals between its stars and a tail.

    @ivar text: the glob as given.
    """

    __slots__ = ("text", "_head", "_middle", "_tail", "_match")

    def __init__(self, text: str) -> None:
        """
        @param text: the glob; C{*} matches any run of characters (C{/}
            included), everything else is literal.
        @raise PatternError: when C{text} is longer than L{MAX_PATTERN}
            bytes.
        """
        if len(text) > MAX_PATTERN // 4 and (
            len(text) > MAX_PATTERN or len(text.encode("utf-8", "surrogatepass")) > MAX_PATTERN
        ):
            raise PatternError(f"a pattern must not be longer than {MAX_PATTERN} bytes")
        self.text = text
        parts = text.split("*")
        self._head = parts[0]
        self._tail = parts[-1] if len(parts) > 1 else ""
        # Consecutive stars are one star: empty literals are dropped.
        self._middle: Optional[Tuple[str, ...]] = (
            None if len(parts) == 1 else tuple(part for part in parts[1:-1] if part)
        )
        self._match = _matcher(self._head, self._middle, self._tail)

    def matches(self, subject: str, start: int = 0) -> bool:
        """
        Whether the glob matches all of C{subject[start:]}.

        @param subject: the path or key.
        @param start: where in C{subject} the glob begins to match.
        @return: L{True} when it matches.
        """
        return self._match(subject, start)

    def __repr__(self) -> str:
        """
        @return: a readable representation.
        """
        return f"Glob({self.text!r})"


def compile_glob(text: str) -> Glob:
    """
    Compile a glob.

    @param text: the glob; C{*} matches any run of characters (C{/}
        included), everything else is literal.
    @return: the compiled glob; match it with L{Glob.matches}.
    @raise PatternError: when C{text} is longer than L{MAX_PATTERN} bytes.
    """
    return Glob(text)


def _bySize(literals: Iterable[str]) -> Tuple[Tuple[int, FrozenSet[str]], ...]:
    """
    @return: the literals grouped by length, shortest first.
    """
    groups: Dict[int, set] = {}
    for literal in literals:
        groups.setdefault(len(literal), set()).add(literal)
    return tuple((size, frozenset(group)) for size, group in sorted(groups.items()))


class GlobSet:
    """
    Several globs, matched as one: a subject matches when any glob does.

    Globs without a star are looked up in a set; globs whose only star ends
    them (C{/api/*}) cost one set look-up per distinct head length, and so
    do globs whose only star begins them (C{*.css}) per tail length; only
    the others are matched one by one. Hundreds of C{/section/*} globs cost
    a few look-ups.
    """

    def __init__(self, globs: Iterable[Glob]) -> None:
        """
        @param globs: the globs.
        """
        exact = set()
        prefixes: List[str] = []
        suffixes: List[str] = []
        others: Dict[str, Callable[[str, int], bool]] = {}
        for glob in globs:
            if glob._middle is None:
                exact.add(glob._head)
            elif glob._middle or (glob._head and glob._tail):
                others.setdefault(glob.text, glob._match)
            elif not glob._tail:
                prefixes.append(glob._head)
            else:
                suffixes.append(glob._tail)
        self._exact: FrozenSet[str] = frozenset(exact)
        self._prefixes = _bySize(prefixes)
        self._suffixes = _bySize(suffixes)
        self._others = tuple(others.values())

    def matches(self, subject: str) -> bool:
        """
        Whether any of the globs matches all of C{subject}.

        @param subject: the path.
        @return: L{True} when one matches.
        """
        if subject in self._exact:
            return True
        for size, heads in self._prefixes:
            if subject[:size] in heads:
                return True
        for size, tails in self._suffixes:
            if subject[-size:] in tails:
                return True
        for match in self._others:
            if match(subject, 0):
                return True
        return False


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
    _glob: Glob = attr.ib(
        init=False,
        eq=False,
        repr=False,
        default=attr.Factory(lambda self: Glob(self.path), takes_self=True),
    )

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        """
        Parse a pattern.

        @param text: C{"PATH"} or C{"METHOD PATH"}, where METHOD is an
            upper-case token and PATH begins with C{/} or C{*}; surrounding
            whitespace is ignored.
        @return: the pattern.
        @raise PatternError: when C{text} has another form, or its path is
            longer than L{MAX_PATTERN} bytes.
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
        return self._glob._match(path, 0)

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

    @ivar include: the globs a path must match, or L{None} for every path
        (or none, when C{restricted}).
    @ivar restricted: whether the include list is non-empty.
    @ivar exclude: the globs excluded paths match, or L{None}.
    """

    include: Optional[GlobSet]
    restricted: bool
    exclude: Optional[GlobSet]


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
    and at most two L{GlobSet} matches.
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
            inc = [p._glob for p in includes if p.method is None or p.method in names]
            exc = [p._glob for p in excludes if p.method is None or p.method in names]
            self._rules[method] = _MethodRule(
                include=GlobSet(inc) if inc else None,
                restricted=bool(includes),
                exclude=GlobSet(exc) if exc else None,
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
        if rule.exclude is not None and rule.exclude.matches(path):
            return "excluded"
        if rule.restricted and (rule.include is None or not rule.include.matches(path)):
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
        @raise PatternError: when C{text} is empty or longer than
            L{MAX_PATTERN} bytes.
        """
        if not text:
            raise PatternError("an invalidation pattern must not be empty")
        self.text = text
        self._match = Glob(text)._match
        self._pathOnly = text.startswith("/")

    def matches(self, key: str) -> bool:
        """
        Whether a key matches.

        @param key: a cache key.
        @return: L{True} when the pattern matches it.
        """
        if not self._pathOnly or key.startswith("/"):
            return self._match(key, 0)
        # METHOD:/path: the method cannot hold a colon, so it ends at the
        # first one.
        colon = key.find(":")
        if colon < 1 or not key.startswith("/", colon + 1):
            return False
        if key[:colon] not in _COMMON_METHODS and _METHOD_RE.fullmatch(key, 0, colon) is None:
            return False
        return self._match(key, colon + 1)

    def __repr__(self) -> str:
        """
        @return: a readable representation.
        """
        return f"InvalidationPattern({self.text!r})"
