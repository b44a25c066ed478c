"""
Patterns for C{include_paths}, C{exclude_paths} and invalidation, made of
globs (L{phantom_frame.cache.globs}): C{*} matches any run of characters,
C{/} included, anywhere in the pattern, everything else is literal, and a
glob matches the whole subject, in time linear in it.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Optional, Sequence, Tuple

import attr

from phantom_frame.cache.globs import MAX_PATTERN, Glob, GlobSet, PatternError, compile_glob
from phantom_frame.cache.paths import spell_pattern

__all__ = [
    "MAX_PATTERN",
    "Glob",
    "GlobSet",
    "InvalidationPattern",
    "PathPattern",
    "PatternError",
    "RequestFilter",
    "compile_glob",
]

_METHOD = "[A-Z][A-Z0-9_-]*"
_METHOD_RE = re.compile(_METHOD)
_COMMON_METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])


@attr.s(frozen=True, auto_attribs=True)
class PathPattern:
    """
    One C{include_paths} or C{exclude_paths} entry: C{"PATH"} or
    C{"METHOD PATH"}.

    @ivar method: the method the pattern names, or L{None} when it names none.
    @ivar path: the path glob, spelled as request paths are (C{/café/*} is
        C{/caf%C3%A9/*}, see L{spell_pattern}).
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
        return cls(method, spell_pattern(path))

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
        return self._glob._match(path)

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

    A path with C{;parameters} in a segment (C{/private;x/page}) is matched
    both as it is and without them (C{/private/page}), as servlet
    containers read it: it is excluded when either form is, and included
    only when both are, so that no origin serves an excluded page under
    another name.

    Everything is compiled up front: a request costs one dictionary look-up
    and at most two L{GlobSet} matches (four with parameters).
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
        bare = _without_parameters(path) if ";" in path else None
        exclude = rule.exclude
        if exclude is not None and (exclude.matches(path) or bare is not None and exclude.matches(bare)):
            return "excluded"
        if rule.restricted:
            include = rule.include
            if include is None or not include.matches(path) or bare is not None and not include.matches(bare):
                return "not-included"
        return None

    @property
    def methods(self) -> Tuple[str, ...]:
        """
        @return: the cacheable methods, sorted.
        """
        return tuple(sorted(self._rules))


def _without_parameters(path: str) -> str:
    """
    @return: C{path} without the C{;parameters} of its segments.
    """
    return "/".join(segment.split(";", 1)[0] for segment in path.split("/"))


def _method_form(key: str, colon: int) -> bool:
    """
    @return: whether C{key[:colon]} is a method name.
    """
    return key[:colon] in _COMMON_METHODS or _METHOD_RE.fullmatch(key, 0, colon) is not None


def _path_start(key: str) -> Tuple[int, int]:
    """
    Split a key of the default form.

    @return: for C{METHOD://HOST/PATH...} or C{METHOD:/PATH...}, the index
        of the colon after the method and where the path begins; for any
        other key (a custom one), C{(-1, 0)}.
    """
    colon = key.find(":")
    if colon <= 0:
        return -1, 0
    start = colon + 1
    if key.startswith("//", start):
        start = key.find("/", start + 2)
        if start < 0:
            return -1, 0
    elif not key.startswith("/", start):
        return -1, 0
    if not _method_form(key, colon):
        return -1, 0
    return colon, start


def _names_host(text: str) -> int:
    """
    @return: for a pattern naming a host (C{//HOST/...} or
        C{METHOD://HOST/...}), where its C{//} begins; else -1.
    """
    if text.startswith("//"):
        return 0
    colon = text.find(":")
    if colon > 0 and text.startswith("//", colon + 1) and _METHOD_RE.fullmatch(text, 0, colon):
        return colon + 1
    return -1


def _spelled(text: str) -> str:
    """
    @return: an invalidation pattern with its path spelled as request
        paths are (L{spell_pattern}); its query, and a pattern that does
        not begin with a path, a method and a path, or a host, as given.
    """
    host = _names_host(text)
    if host >= 0:
        start = text.find("/", host + 2)
    elif text.startswith("/"):
        start = 0
    else:
        colon = text.find(":")
        start = colon + 1 if colon > 0 and _METHOD_RE.fullmatch(text, 0, colon) and text.startswith("/", colon + 1) else -1
    if start < 0:
        return text
    path, mark, query = text[start:].partition("?")
    return text[:start] + spell_pattern(path) + mark + query


def _matcher(text: str) -> Callable[[str], bool]:
    """
    Build the matching function of an invalidation pattern (see
    L{InvalidationPattern}).
    """
    glob = Glob(text)
    match = glob._match
    whole_query = "?" in text
    if text == "*":
        return lambda key: True
    host = _names_host(text)
    if text.startswith("/") and host < 0:
        if glob._middle is not None and not glob._middle and not glob._tail:
            head = glob._head

            # The commonest form, C{/section/*}: prefix checks only (the
            # head has no "?", so the query does not matter).
            def prefix(key: str) -> bool:
                if key.startswith(head):
                    return True
                colon, start = _path_start(key)
                return colon > 0 and key.startswith(head, start)

            return prefix

        def path(key: str) -> bool:
            colon, start = _path_start(key)
            end = len(key) if whole_query else key.find("?", start)
            return match(key if end < 0 else key[:end], start)

        return path

    def whole(key: str) -> bool:
        colon, start = _path_start(key)
        end = len(key) if whole_query else key.find("?", start)
        subject = key if end < 0 else key[:end]
        if host < 0 and colon > 0 and start > colon + 1:
            # A pattern that names no host sees the key without its host.
            subject = subject[: colon + 1] + subject[start:]
        elif host == 0:
            # //HOST/...: any method, keys with a host only.
            return colon > 0 and start > colon + 1 and match(subject, colon + 1)
        return match(subject)

    return whole


class InvalidationPattern:
    """
    A pattern naming cache keys to invalidate.

    The pattern is a glob matched against keys, and against every C{Vary}
    variant of them. Keys are scoped by host (C{GET://example.com/x?y});
    a pattern names no host, and matches keys of every host, unless it
    begins with C{//HOST} (any method) or C{METHOD://HOST}.

     - A pattern that begins with one C{/} matches the path part of keys
       for any method and host: C{"/api/*"} matches C{GET:/api/x},
       C{POST://example.com/api/y?z=1}; a key not of the default form (a
       custom key) is matched whole.
     - Another pattern that names no host (C{"GET:/api/*"},
       C{"*/users/*"}, C{"*"}) is matched against the whole key with its
       host left out: C{GET:/api/x} for C{GET://example.com/api/x}.
     - C{"//example.com/api/*"} matches the keys of that host for any
       method, C{"GET://example.com/*"} its C{GET} keys; the host part is a
       glob too (C{"//*.example.com/*"}).

    A pattern without C{?} matches a key whatever its query (C{"/isr"}
    drops C{/isr} and C{/isr?_rsc=...}); a pattern with C{?} matches the
    query too. The path of a pattern is spelled as request paths are
    (C{/café} is C{/caf%C3%A9}, see L{spell_pattern}). Matching takes time
    linear in the key.

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
        Glob(text)  # refuse a pattern too long before spelling it
        self._matches = _matcher(_spelled(text))
        # A cache walk calls this once per key: the instance attribute
        # skips the method's own call.
        self.matches = self._matches  # type: ignore[method-assign]

    def matches(self, key: str) -> bool:
        """
        Whether a key matches.

        @param key: a cache key.
        @return: L{True} when the pattern matches it.
        """
        return self._matches(key)

    def __repr__(self) -> str:
        """
        @return: a readable representation.
        """
        return f"InvalidationPattern({self.text!r})"
