"""
Request paths, normalised once: what a request's path is called before it
is routed, matched against patterns, keyed and forwarded, so that no
prefix, pattern or exclusion can be dodged by spelling a path another way.

L{normalise_path} does, in order:
 1. a C{\\} is a C{/} (as browsers read it, and WHATWG URL parsers such as
    Node.js's);
 2. characters are spelled the one way (L{phantom_frame.cache.paths}):
    unreserved characters decoded (C{%2E} is C{.}, C{%70} is C{p}), other
    encoded bytes with upper-case hex, bytes a path may not hold raw
    encoded; a C{%} not followed by two hex digits is refused;
 3. repeated slashes are merged (C{//a///b} is C{/a/b}; a trailing slash
    is kept);
 4. C{.} and C{..} segments are removed (RFC 3986 §5.2.4); a C{..} that
    climbs above the root, or into the prefix of the server the path was
    addressed to, is refused.

C{%2F} and C{%5C} stay encoded: they are not separators here. But an
origin that decodes them (most do) would see a dot segment in C{..%2F} or
C{.%5C}, and a servlet container strips C{;parameters} before it removes
dot segments (C{..;x} is C{..} to Tomcat): a segment that hides a C{.} or
C{..} so is refused too, since no spelling of it means the same thing here
and at every origin. Refused paths are answered 400.
"""

from __future__ import annotations

import re
from typing import Callable, List, Optional, Sequence

from phantom_frame.cache.paths import PercentError, spell_path

__all__ = ["TargetError", "normalise_path", "path_segments", "remove_dots"]

#: A path that is normal already: non-empty segments of characters allowed
#: raw (C{;} and C{%} excepted, which need a closer look), none of them C{.}
#: or C{..}, and perhaps a trailing slash.
_NORMAL = re.compile(rb"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?")

_CONTROL = re.compile(rb"[\x00-\x20\x7f]")

#: What may hide a dot segment from us but not from an origin.
_HIDING = re.compile(rb"%2F|%5C")

_DOTS = (b".", b"..")


class TargetError(ValueError):
    """
    A request path that is refused (answered 400); the message says why.
    """


def _hides_dots(segment: bytes) -> bool:
    """
    @return: whether an origin that decodes C{%2F} or C{%5C}, or strips
        C{;parameters}, would see a C{.} or C{..} segment in C{segment}.
    """
    for part in _HIDING.split(segment):
        if part.split(b";", 1)[0] in _DOTS:
            return True
    return False


def path_segments(path: bytes) -> List[bytes]:
    """
    Steps 1 to 3 of L{normalise_path}: the spelled segments of C{path},
    empty ones dropped (but a last one, for a trailing slash), dot segments
    still in place.

    @param path: a raw path, starting with C{/}, without the query.
    @return: its segments (C{[b""]} for C{/}).
    @raise TargetError: on a malformed C{%}, or a segment hiding a dot
        segment.
    """
    if not path.startswith(b"/"):
        raise TargetError("a path must start with /")
    if _CONTROL.search(path):
        raise TargetError("a path must not hold spaces or control characters")
    try:
        spelled = spell_path(path.replace(b"\\", b"/"))
    except PercentError as e:
        raise TargetError(str(e)) from None
    parts = spelled[1:].split(b"/")
    last = len(parts) - 1
    segments = [part for index, part in enumerate(parts) if part or index == last]
    for segment in segments:
        if segment not in _DOTS and (b"%" in segment or b";" in segment) and _hides_dots(segment):
            raise TargetError("a segment hides a dot segment")
    return segments


def remove_dots(segments: Sequence[bytes], keep: int = 0) -> bytes:
    """
    Step 4 of L{normalise_path}: remove dot segments (RFC 3986 §5.2.4).

    @param segments: what L{path_segments} returned.
    @param keep: how many leading segments are a prefix a C{..} may not
        climb into (the first C{keep} segments are none of C{.} or C{..}).
    @return: the path.
    @raise TargetError: when a C{..} would remove the root or one of the
        first C{keep} segments.
    """
    kept: List[bytes] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == b".":
            if index == last:
                kept.append(b"")
        elif segment == b"..":
            if len(kept) <= keep:
                raise TargetError("the path climbs above " + ("its prefix" if keep else "the root"))
            kept.pop()
            if index == last:
                kept.append(b"")
        else:
            kept.append(segment)
    return b"/" + b"/".join(kept)


def normalise_path(path: bytes, prefix_depth: Optional[Callable[[Sequence[bytes]], int]] = None) -> bytes:
    """
    Normalise a request path (see the module's description).

    @param path: the raw path, starting with C{/}, without the query.
    @param prefix_depth: given the path's segments before dot segments are
        removed (as L{path_segments} returns them), how many of them are
        the prefix of the server the path is addressed to; none by default.
    @return: the normal path; C{path} itself when it is normal already.
    @raise TargetError: when the path is refused.
    """
    if _NORMAL.fullmatch(path) and path:
        return path
    segments = path_segments(path)
    keep = prefix_depth(segments) if prefix_depth is not None else 0
    return remove_dots(segments, keep)
