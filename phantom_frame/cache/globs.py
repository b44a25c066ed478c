"""
Globs: C{*} matches any run of characters, C{/} included, anywhere in the
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

from operator import methodcaller
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

#: The longest glob accepted, in bytes of UTF-8.
MAX_PATTERN = 4096


class PatternError(ValueError):
    """
    A path or invalidation pattern is malformed.
    """


def _matcher(head: str, middle: Optional[Tuple[str, ...]], tail: str) -> Callable[..., bool]:
    """
    Build the function that matches one glob, specialised to its shape.

    @param head: the literal before the first star (the whole glob when it
        has none).
    @param middle: the non-empty literals between stars, or L{None} when
        the glob has no star.
    @param tail: the literal after the last star.
    @return: a function of C{(subject, start=0)} telling whether the glob
        matches all of C{subject[start:]}.
    """
    if middle is None:
        size = len(head)
        return lambda subject, start=0: len(subject) - start == size and subject.startswith(head, start)
    least = len(head) + len(tail) + sum(len(literal) for literal in middle)
    if not middle:
        if not tail:
            return lambda subject, start=0: subject.startswith(head, start)
        if not head:
            return lambda subject, start=0: len(subject) - start >= least and subject.endswith(tail)
        return lambda subject, start=0: (
            len(subject) - start >= least and subject.startswith(head, start) and subject.endswith(tail)
        )
    skip = len(head)
    cut = len(tail)

    def search(subject: str, start: int = 0) -> bool:
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


#: Up to this many heads (or tails), one C{startswith} (C{endswith}) over
#: all of them is cheaper than a look-up per length.
_FEW = 8


def _affixes(literals: List[str]) -> Tuple[Tuple[str, ...], Tuple[Tuple[int, FrozenSet[str]], ...]]:
    """
    Arrange prefix (or suffix) literals for matching.

    @param literals: the literals.
    @return: a tuple for one C{startswith} (or C{endswith}) when they are
        few, else groups of literals by length, shortest first, for one set
        look-up per length; the other part is empty.
    """
    unique = list(dict.fromkeys(literals))
    if len(unique) <= _FEW:
        return tuple(unique), ()
    groups: Dict[int, set] = {}
    for literal in unique:
        groups.setdefault(len(literal), set()).add(literal)
    return (), tuple((size, frozenset(group)) for size, group in sorted(groups.items()))


class GlobSet:
    """
    Several globs, matched as one: a subject matches when any glob does.

    Globs without a star are looked up in a set; globs whose only star ends
    them (C{/api/*}) are one C{startswith} over their heads, or, when there
    are many, one set look-up per distinct head length; globs whose only
    star begins them (C{*.css}) likewise with their tails. Only the others
    are matched one by one: hundreds of C{/section/*} globs cost a few
    look-ups.
    """

    def __init__(self, globs: Iterable[Glob]) -> None:
        """
        @param globs: the globs.
        """
        exact = set()
        prefixes: List[str] = []
        suffixes: List[str] = []
        others: Dict[str, Callable[..., bool]] = {}
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
        self._prefixes, self._prefixGroups = _affixes(prefixes)
        self._suffixes, self._suffixGroups = _affixes(suffixes)
        self._others = tuple(others.values())
        # When one C call decides, it replaces the method (the commonest
        # lists are all exact paths, all C{/section/*} or all C{*.ext}).
        if not (self._prefixGroups or self._suffixGroups or self._others):
            kinds = [bool(self._exact), bool(self._prefixes), bool(self._suffixes)]
            if kinds == [True, False, False]:
                self.matches = self._exact.__contains__  # type: ignore[method-assign]
            elif kinds == [False, True, False]:
                self.matches = methodcaller("startswith", self._prefixes)  # type: ignore[method-assign]
            elif kinds == [False, False, True]:
                self.matches = methodcaller("endswith", self._suffixes)  # type: ignore[method-assign]

    def matches(self, subject: str) -> bool:
        """
        Whether any of the globs matches all of C{subject}.

        @param subject: the path.
        @return: L{True} when one matches.
        """
        if subject in self._exact or subject.startswith(self._prefixes) or subject.endswith(self._suffixes):
            return True
        for size, heads in self._prefixGroups:
            if subject[:size] in heads:
                return True
        for size, tails in self._suffixGroups:
            if subject[-size:] in tails:
                return True
        for match in self._others:
            if match(subject):
                return True
        return False
