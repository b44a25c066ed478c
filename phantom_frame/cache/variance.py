"""
C{Vary}: which request headers tell a key's stored responses apart.

L{normalise} and L{variant_of} turn a request's header values into the
L{Variant} an entry is stored under; L{Variance} remembers, per key, the
header names its responses vary on and the variants stored for it (at most
C{max_variants}, the oldest stored going first), and says which stored
variants a new entry supersedes or pushes out.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Iterable, Optional, Tuple

import attr

from phantom_frame.cache.entry import Variant

#: The variants of a key whose responses vary on nothing: the plain one.
_PLAIN: Tuple[Variant, ...] = ((),)


def normalise(value: Optional[str]) -> Optional[str]:
    """
    Normalise a request header value for Vary matching: whitespace around
    list items and runs of spaces do not make a different variant.

    @param value: the header's value, or L{None} when the request lacks it.
    @return: the normalised value; L{None} stays L{None}.
    """
    if value is None:
        return None
    return ",".join(" ".join(item.split()) for item in value.split(","))


def variant_of(names: Tuple[str, ...], header: Callable[[str], Optional[str]]) -> Variant:
    """
    @param names: lower-cased header names.
    @param header: looks a request header up by lower-cased name.
    @return: the request's variant for those names.
    """
    return tuple(normalise(header(name)) for name in names)


@attr.s(frozen=True, auto_attribs=True)
class Tracked:
    """
    What storing one entry does to the variants of its key, as
    L{Variance.track} decides it.

    @ivar superseded: the variants of the key the entry replaces, every one
        of them, wherever they are held (its C{Vary} names differ from those
        stored); empty when it replaces none.
    @ivar overflow: the variants pushed out of the key's bound by the
        entry's, oldest first, to drop from the LRUs.
    """

    superseded: Tuple[Variant, ...] = ()
    overflow: Tuple[Variant, ...] = ()


class Variance:
    """
    Per key, the C{Vary} names its responses vary on and the variants stored
    for it, oldest stored first, at most C{max_variants} of them.

    A key without names is plain: its only variant is C{()}.
    """

    def __init__(self, max_variants: int) -> None:
        """
        @param max_variants: how many variants one key may have.
        """
        self._maxVariants = max_variants
        self._names: Dict[str, Tuple[str, ...]] = {}
        self._variants: Dict[str, "OrderedDict[Variant, None]"] = {}

    def __contains__(self, key: object) -> bool:
        """
        @return: whether C{key} has C{Vary} names or variants tracked.
        """
        return key in self._names or key in self._variants

    def names(self, key: str) -> Tuple[str, ...]:
        """
        @return: the lower-cased header names the responses of C{key} vary
            on; C{()} for a plain key.
        """
        return self._names.get(key, ())

    def slot(self, key: str, header: Callable[[str], Optional[str]]) -> Tuple[str, Variant]:
        """
        @param header: looks a request header up by lower-cased name.
        @return: where the entry of C{key} that a request asks for is held:
            C{key} and the request's variant for the key's names.
        """
        names = self._names.get(key)
        return (key, variant_of(names, header) if names else ())

    def variants(self, key: str) -> Iterable[Variant]:
        """
        @return: the variants stored for C{key}, oldest first; C{[()]} for
            a plain key.
        """
        return self._variants.get(key, _PLAIN)

    def track(self, key: str, names: Tuple[str, ...], variant: Variant) -> Tracked:
        """
        Note that an entry of C{key} varying on C{names} is stored as
        C{variant}, the newest of its key.

        An entry whose names are not those tracked for its key supersedes
        every variant of the key (a plain entry, one varying on nothing,
        supersedes them too); one variant too many pushes the oldest out.

        @param names: the entry's C{Vary} names (C{()}: plain).
        @param variant: its variant (C{()} when plain).
        @return: the variants the caller must now drop.
        """
        superseded: Tuple[Variant, ...] = ()
        if names:
            if self._names.get(key) != names:
                superseded = self.forget(key)
                self._names[key] = names
            variants = self._variants.setdefault(key, OrderedDict())
            variants[variant] = None
            variants.move_to_end(variant)
            overflow = []
            while len(variants) > self._maxVariants:
                oldest, _ = variants.popitem(last=False)
                overflow.append(oldest)
            return Tracked(superseded, tuple(overflow))
        if key in self._names:
            superseded = self.forget(key)
        return Tracked(superseded)

    def untrack(self, key: str, variant: Variant) -> None:
        """
        Note that C{variant} of C{key} is no longer stored; when it was the
        last, the key's names are forgotten too.
        """
        variants = self._variants.get(key)
        if variants is not None:
            variants.pop(variant, None)
            if not variants:
                del self._variants[key]
                self._names.pop(key, None)

    def forget(self, key: str) -> Tuple[Variant, ...]:
        """
        Forget the names and variants of C{key}.

        @return: every variant of C{key} that may be held, C{()} among them.
        """
        variants = self._variants.pop(key, None)
        self._names.pop(key, None)
        return tuple(variants or ()) + _PLAIN

    def forget_matching(self, matches: Callable[[str], bool]) -> None:
        """
        Forget the names and variants of every key C{matches} accepts.
        """
        for key in [k for k in self._names if matches(k)]:
            self._names.pop(key, None)
            self._variants.pop(key, None)

    def clear(self) -> None:
        """
        Forget every key.
        """
        self._names.clear()
        self._variants.clear()
