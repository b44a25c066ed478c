"""
C{Vary}: which request headers tell a key's stored responses apart.

L{normalise} and L{variant_of} turn a request's header values into the
L{Variant} an entry is stored under; L{Variance} remembers, per key, the
header names its responses vary on and the variants stored for it (at most
C{max_variants}, the oldest stored going first), and says which stored
variants a new entry supersedes or pushes out.

Normalising makes equivalent header values one variant without merging
different ones. Any header: whitespace around list items and runs of
spaces do not count; case does. The content negotiation headers
(L{NEGOTIATION}: C{Accept}, C{Accept-Charset}, C{Accept-Encoding},
C{Accept-Language}) are lists of case-insensitive tokens with optional
parameters and a q-value (RFC 9110 section 12.4), so for them also:

  - tokens and parameter names are lower-cased (parameter values keep
    their case, quoted strings are kept as they are), empty list items
    are dropped;
  - q-values are written in their shortest form (C{q=0.50} is C{q=0.5},
    C{q=0.0} is C{q=0}) and C{q=1}, the default, is left out;
  - items are put in order of preference: higher q first, and items of
    equal q keep the order the client gave. Only the order between items
    of different q carries no meaning (their q-values already say which
    is preferred); the order of equal-q items is the client's preference
    for some servers (and for C{Accept-Language} lookup), so two headers
    that differ there stay different variants.

So C{Accept-Language: en-US,fr;q=0.5} and C{accept-language: fr;q=0.50,
en-us} are one variant; C{en, fr} and C{fr, en} are two. A value that does
not parse as such a list (a bad q-value, an unclosed quote) is only
trimmed, as any other header.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import attr

from phantom_frame.cache.entry import Variant

#: The variants of a key whose responses vary on nothing: the plain one.
_PLAIN: Tuple[Variant, ...] = ((),)

#: The request headers whose values are lists of case-insensitive tokens
#: with q-values, normalised as such (see the module's docstring).
NEGOTIATION = frozenset({"accept", "accept-charset", "accept-encoding", "accept-language"})


def no_header(name: str) -> Optional[str]:
    """
    Look a header up in a request without headers (snapshots are fetched
    so): none is there.
    """
    return None


def normalise(value: Optional[str], name: str = "") -> Optional[str]:
    """
    Normalise a request header value for Vary matching (see the module's
    docstring): whitespace around list items and runs of spaces never make
    a different variant; for the L{NEGOTIATION} headers, nor do the case
    of tokens, the spelling of q-values, or the order of items of
    different q.

    @param value: the header's value, or L{None} when the request lacks it.
    @param name: the header's lower-cased name; C{""} for a header that is
        only trimmed.
    @return: the normalised value; L{None} stays L{None}.
    """
    if value is None:
        return None
    if name in NEGOTIATION:
        listed = _remembered(value) if len(value) <= _REMEMBERED else _negotiation(value)
        if listed is not None:
            return listed
    return _trimmed(value)


def _trimmed(value: str) -> str:
    """
    @return: C{value} without whitespace around its comma-separated items,
        runs of whitespace inside them made one space.
    """
    return ",".join(" ".join(item.split()) for item in value.split(","))


def _split(value: str, separator: str) -> Optional[List[str]]:
    """
    Split C{value} at C{separator} outside quoted strings.

    @return: the parts, or L{None} when a quoted string is not closed.
    """
    if '"' not in value:
        return value.split(separator)
    parts: List[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == separator:
            parts.append(value[start:index])
            start = index + 1
    if quoted:
        return None
    parts.append(value[start:])
    return parts


def _qvalue(text: str) -> Optional[Tuple[int, str]]:
    """
    Parse a q-value (RFC 9110 section 12.4.2: C{0} to C{1}, at most three
    decimals).

    @return: the weight in thousandths and its shortest spelling, or
        L{None} when C{text} is not a q-value.
    """
    whole, dot, decimals = text.partition(".")
    if whole not in ("0", "1") or len(decimals) > 3 or not (decimals.isdigit() or not decimals):
        return None
    weight = int(whole) * 1000 + int(decimals.ljust(3, "0") or "0")
    if weight > 1000:
        return None
    decimals = decimals.rstrip("0")
    return weight, whole + "." + decimals if decimals else whole


def _negotiation(value: str) -> Optional[str]:
    """
    Normalise a content negotiation header (see the module's docstring).

    @return: the normal form, or L{None} when C{value} does not parse.
    """
    items = _split(value, ",")
    if items is None:
        return None
    weighted: List[Tuple[int, str]] = []
    for item in items:
        parts = _split(item, ";")
        if parts is None:
            return None
        token = " ".join(parts[0].split()).lower()
        if not token and len(parts) == 1:
            continue
        weight = 1000
        params = [token]
        q = None
        for param in parts[1:]:
            pname, equals, pvalue = param.partition("=")
            pname = pname.strip().lower()
            pvalue = pvalue.strip()
            if not (pname or equals):
                continue
            if pname == "q" and equals:
                parsed = _qvalue(pvalue)
                if parsed is None:
                    return None
                weight, q = parsed
            else:
                params.append(pname + equals + (pvalue if pvalue.startswith('"') else " ".join(pvalue.split())))
        if q is not None and weight != 1000:
            params.append("q=" + q)
        weighted.append((-weight, ";".join(params)))
    weighted.sort(key=lambda pair: pair[0])
    return ",".join(item for _, item in weighted)


#: The longest value whose normal form is remembered, and how many are.
_REMEMBERED = 256
_remembered = lru_cache(maxsize=1024)(_negotiation)


def variant_of(names: Tuple[str, ...], header: Callable[[str], Optional[str]]) -> Variant:
    """
    @param names: lower-cased header names.
    @param header: looks a request header up by lower-cased name.
    @return: the request's variant for those names, each value normalised
        as L{normalise} does for its name.
    """
    return tuple(normalise(header(name), name) for name in names)


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


#: What storing a plain entry of a plain key does (most stores): nothing
#: to drop (one instance for all: it is immutable).
_NOTHING_TO_DROP = Tracked()


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
            return Tracked(self.forget(key))
        return _NOTHING_TO_DROP

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
