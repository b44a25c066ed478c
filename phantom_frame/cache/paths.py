"""
The one spelling of a path's characters (RFC 3986 §6.2.2.1-2): percent-
encoded unreserved characters decoded, the hex digits of what stays encoded
in upper case, and the bytes a path may not hold raw (non-ASCII, spaces,
quotes, C{<>{}|^`}...) percent-encoded.

Request paths (L{phantom_frame.proxy.target}) and the paths of patterns
(L{phantom_frame.cache.patterns}) are both spelled so: C{/%7Euser},
C{/~user} and C{/%7euser} are one path, and a pattern written C{/café/*}
matches the request C{/caf%C3%A9/menu}. Reserved characters keep their
form: C{%2F} stays encoded (it is not a C{/}), and so does C{%3F}.
"""

from __future__ import annotations

import re

__all__ = ["PercentError", "UNRESERVED", "spell_path", "spell_pattern"]

#: The unreserved characters (RFC 3986 §2.3): never percent-encoded.
UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

#: One thing to respell: a percent-encoded byte, a lone C{%}, or a byte a
#: path may not hold raw (anything but pchar and C{/}).
_RESPELL = re.compile(rb"%([0-9A-Fa-f]{2})|%|[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]")

#: A path that is spelled already: only characters allowed raw, no C{%}.
_PLAIN = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")

_DECODED = {b"%02X" % byte: bytes((byte,)) for byte in UNRESERVED}


class PercentError(ValueError):
    """
    A C{%} is not followed by two hex digits.
    """


def _respell(match: "re.Match[bytes]") -> bytes:
    digits = match.group(1)
    if digits is not None:
        upper = digits.upper()
        return _DECODED.get(upper) or b"%" + upper
    text = match.group()
    if text == b"%":
        raise PercentError("a % must be followed by two hex digits")
    return b"%%%02X" % text[0]


def _respell_lenient(match: "re.Match[bytes]") -> bytes:
    if match.group() == b"%":
        return b"%25"
    return _respell(match)


def spell_path(path: bytes) -> bytes:
    """
    Spell the characters of a request path the one way.

    @param path: the raw path (no query).
    @return: C{path} with unreserved characters decoded, the hex of other
        encoded bytes in upper case and disallowed bytes encoded; the
        segments and slashes are left as they are.
    @raise PercentError: when a C{%} is not followed by two hex digits.
    """
    if _PLAIN.fullmatch(path):
        return path
    return _RESPELL.sub(_respell, path)


def spell_pattern(text: str) -> str:
    """
    Spell the path of a pattern as request paths are spelled, so that it
    matches them: characters outside ASCII are encoded from their UTF-8
    bytes, a lone C{%} stands for itself (C{%25}), a C{\\} is a C{/} (as
    in request paths); C{*} is kept.

    @param text: the path part of a pattern (no query).
    @return: the spelled text (ASCII).
    """
    data = text.replace("\\", "/").encode("utf-8", "surrogatepass")
    if _PLAIN.fullmatch(data):
        return data.decode("ascii")
    return _RESPELL.sub(_respell_lenient, data).decode("ascii")
