"""
What may be stored: the rules of the cache strategies, response statuses,
C{Cache-Control}, C{Vary} and soft 404s.

Headers are sequences of C{(name, value)} byte pairs as received: names in
any case, repeated names allowed.
"""

from __future__ import annotations

import re
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from phantom_frame.cache.strategy import CacheStrategy

Headers = Iterable[Tuple[bytes, bytes]]

MAIN_STATUSES: FrozenSet[int] = frozenset({200, 203, 300, 301, 308, 410})
"""
Statuses stored in the main cache.
"""

NOT_FOUND_STATUSES: FrozenSet[int] = frozenset({404})
"""
Statuses stored in the 404 cache.
"""

UNDERSTOOD_STATUSES: FrozenSet[int] = frozenset(
    set(range(200, 207)) | set(range(300, 306)) | {307, 308} | set(range(400, 418))
    | {421, 422, 426} | set(range(500, 506))
)
"""
Statuses whose caching rules phantom-frame knows (RFC 9110 §15), for
C{must-understand} (RFC 9111 §5.2.2.3).
"""

_HTML = frozenset({"text/html", "application/xhtml+xml"})
_ASSETS = frozenset(
    {
        "text/css",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/json",
        "application/manifest+json",
        "application/wasm",
        "application/xml",
        "text/xml",
    }
)
_KNOWN_CODINGS = frozenset({"identity", "br", "gzip", "x-gzip", "deflate"})
_SOFT_404_WINDOW = 64 * 1024


#: The last tuple of headers read by L{header_values}, and its values by
#: lower-cased name: a response's headers are asked for a dozen names in a
#: row while it is stored.
_indexed: Tuple[Any, Dict[bytes, List[bytes]]] = ((), {})


def header_index(headers: Tuple[Tuple[bytes, bytes], ...]) -> Dict[bytes, List[bytes]]:
    """
    The values of a tuple of headers by lower-cased name, made once for
    the calls that follow with the same tuple.

    @param headers: C{(name, value)} pairs, as a tuple (see L{as_pairs}).
    @return: the values of each name present, in order; the caller reads
        it and never changes it.
    """
    global _indexed
    last = _indexed
    if last[0] is not headers:
        index: Dict[bytes, List[bytes]] = {}
        for key, value in headers:
            index.setdefault(key.lower(), []).append(value)
        last = _indexed = (headers, index)
    return last[1]


def header_values(headers: Headers, name: bytes) -> List[bytes]:
    """
    Every value of a header.

    @param headers: C{(name, value)} pairs; a tuple of them is indexed
        once for the calls that follow with the same tuple
        (L{header_index}).
    @return: the values in order; empty when the header is absent.
    """
    wanted = name.lower()
    if headers.__class__ is not tuple:
        return [value for key, value in headers if key.lower() == wanted]
    return list(header_index(headers).get(wanted, ()))  # type: ignore[arg-type]


def as_pairs(headers: Iterable[Tuple[bytes, bytes]]) -> Tuple[Tuple[bytes, bytes], ...]:
    """
    @return: C{headers} as a tuple (itself when it is one), which
        L{header_values} reads once for every name asked of it.
    """
    return headers if headers.__class__ is tuple else tuple(headers)  # type: ignore[return-value]


def header_value(headers: Headers, name: bytes) -> Optional[bytes]:
    """
    A header's values joined as one.

    @param headers: C{(name, value)} pairs; a tuple of them is read
        through its index (L{header_index}).
    @param name: the header name, in any case.
    @return: the values joined with C{b", "}, or L{None} when absent.
    """
    if headers.__class__ is tuple:
        values = header_index(headers).get(name.lower())  # type: ignore[arg-type]
    else:
        values = header_values(headers, name)
    if not values:
        return None
    return b", ".join(values)


def media_type(headers: Headers) -> Optional[str]:
    """
    The media type of a response.

    @param headers: the response headers.
    @return: the C{Content-Type}, lower-cased, without parameters and
        whitespace (the last one when the header is repeated); L{None} when
        absent or empty.
    """
    if headers.__class__ is tuple:
        values = header_index(headers).get(b"content-type", ())  # type: ignore[arg-type]
    else:
        values = header_values(headers, b"content-type")
    for value in reversed(values):
        media = _MEDIA_TYPES.get(value, "")
        if media == "":
            media = value.split(b";", 1)[0].strip().lower().decode("latin-1") or None
            if len(_MEDIA_TYPES) < 512:
                _MEDIA_TYPES[value] = media
        if media:
            return media
    return None


#: The media type of each C{Content-Type} value read so far (a few hundred
#: at most: an origin sends the same few again and again).
_MEDIA_TYPES: Dict[bytes, Optional[str]] = {}


def strategy_allows(strategy: CacheStrategy, media: Optional[str]) -> bool:
    """
    Whether a cache strategy lets a response of some media type be stored.

    @param strategy: the server's C{cache_strategy}.
    @param media: the response's media type (see L{media_type}), or L{None}
        when it has no C{Content-Type}.
    @return: L{True} when the response may be stored: C{all} stores
        everything; C{none} nothing; C{only_html} C{text/html} and
        C{application/xhtml+xml}; C{only_images} C{image/*}; C{no_images}
        anything but C{image/*}; C{only_assets} images, fonts, style sheets,
        scripts, JSON, manifests, WebAssembly and XML. Without a media type,
        only C{all} and C{no_images} store.
    """
    if strategy == CacheStrategy.ALL:
        return True
    if strategy == CacheStrategy.NONE:
        return False
    if media is None:
        return strategy == CacheStrategy.NO_IMAGES
    image = media.startswith("image/")
    if strategy == CacheStrategy.NO_IMAGES:
        return not image
    if strategy == CacheStrategy.ONLY_IMAGES:
        return image
    if strategy == CacheStrategy.ONLY_HTML:
        return media in _HTML
    if strategy == CacheStrategy.ONLY_ASSETS:
        return image or media.startswith("font/") or media in _ASSETS
    return False


_CC_TOKEN = re.compile(r"[^,=\"]*")
_CC_VALUE = re.compile(r"[^,\"\s]*")


def _quoted_string(text: str, start: int) -> Optional[Tuple[str, int]]:
    """
    Read a quoted string.

    @param text: the input.
    @param start: the index of the opening quote.
    @return: the unquoted value and the index after the closing quote, or
        L{None} when the quote is never closed.
    """
    chars: List[str] = []
    i = start + 1
    length = len(text)
    while i < length:
        char = text[i]
        if char == '"':
            return "".join(chars), i + 1
        if char == "\\" and i + 1 < length:
            i += 1
            char = text[i]
        chars.append(char)
        i += 1
    return None


def parse_cache_control(values: Sequence[bytes]) -> Dict[str, Optional[str]]:
    """
    Parse C{Cache-Control} header values.

    Malformed input never raises: empty items and stray commas are skipped,
    garbage after a value is ignored up to the next comma, and a value with
    an unbalanced quote ends at the next comma like a token (so that a
    malformed value cannot hide a following C{private} or C{no-store}).

    @param values: the header's values, as received.
    @return: directive names, lower-cased, mapped to their values (quoted
        strings unquoted), or to L{None} for directives without one. A
        repeated directive keeps its first value.
    """
    text = b",".join(values).decode("latin-1")
    result: Dict[str, Optional[str]] = {}
    length = len(text)
    i = 0
    while i < length:
        match = _CC_TOKEN.match(text, i)
        assert match is not None
        name = match.group().strip().lower()
        i = match.end()
        value: Optional[str] = None
        if i < length and text[i] == "=":
            i += 1
            while i < length and text[i] in " \t":
                i += 1
            if text.startswith('"', i):
                quoted = _quoted_string(text, i)
                if quoted is not None:
                    value, i = quoted
                else:
                    i += 1
            if value is None:
                match = _CC_VALUE.match(text, i)
                assert match is not None
                value = match.group()
                i = match.end()
        # Skip whatever garbage remains up to the next comma.
        comma = text.find(",", i)
        i = length if comma == -1 else comma + 1
        if name and name not in result:
            result[name] = value
    return result


def cache_control_values(headers: Headers) -> Tuple[List[bytes], bool]:
    """
    The caching directives in force for phantom-frame: those of
    C{CDN-Cache-Control} when it has any (RFC 9213 §2.2: a cache it targets
    then ignores C{Cache-Control} and C{Expires}), else those of
    C{Cache-Control}.

    @param headers: the response headers.
    @return: the values to parse, and whether they are C{CDN-Cache-Control}'s.
    """
    headers = as_pairs(headers)
    cdn = header_values(headers, b"cdn-cache-control")
    if cdn and parse_cache_control(cdn):
        return cdn, True
    return header_values(headers, b"cache-control"), False


def opaque_coding(headers: Headers) -> bool:
    """
    @param headers: the response headers.
    @return: whether its C{Content-Encoding} lists a coding phantom-frame
        cannot undo: the body is then the origin's representation, stored
        and sent as it is.
    """
    return any(c not in _KNOWN_CODINGS for c in _tokens(header_values(headers, b"content-encoding")))


def request_bypass_reason(method: str, headers: Headers) -> Optional[str]:
    """
    Why a request must bypass the cache entirely, whatever the patterns say.

    @param method: the request method.
    @param headers: the request headers.
    @return: C{"authorization"} when the request carries credentials,
        otherwise L{None}.
    """
    if header_values(headers, b"authorization"):
        return "authorization"
    return None


def _tokens(values: Sequence[bytes]) -> List[str]:
    """
    Split comma-separated header values into lower-cased, stripped,
    non-empty items.
    """
    tokens = []
    for value in values:
        for item in value.decode("latin-1").split(","):
            item = item.strip().lower()
            if item:
                tokens.append(item)
    return tokens


def response_bypass_reason(
    status: int, headers: Headers, strategy: CacheStrategy, check_status: bool = True
) -> Optional[str]:
    """
    Why a response must not be stored.

    @param status: the response status.
    @param headers: the response headers.
    @param strategy: the server's C{cache_strategy}.
    @param check_status: whether to apply the prerender policy's statuses
        (the http policy has its own rules).
    @return: L{None} when the response may be stored; otherwise the first
        reason that applies, checked in this order: C{"status"} (not a
        stored status), C{"set-cookie"}, C{"no-store"} (unless
        C{must-understand} lifts it for a status phantom-frame knows),
        C{"private"} (qualified or not), C{"vary-star"} (C{Vary: *}) and
        C{"strategy"} (the media type is not stored under C{strategy}). The
        directives are C{CDN-Cache-Control}'s when it has any (see
        L{cache_control_values}). A C{Content-Encoding} phantom-frame
        cannot undo does not prevent storing (see L{opaque_coding}).
    """
    headers = as_pairs(headers)
    if check_status and status not in MAIN_STATUSES and status not in NOT_FOUND_STATUSES:
        return "status"
    # (The index read directly: these names are asked of every response.)
    index = header_index(headers)
    if index.get(b"set-cookie"):
        return "set-cookie"
    if b"cache-control" in index or b"cdn-cache-control" in index:
        directives = parse_cache_control(cache_control_values(headers)[0])
        if "no-store" in directives and not (
            "must-understand" in directives and status in UNDERSTOOD_STATUSES
        ):
            return "no-store"
        if "private" in directives:
            return "private"
    vary = index.get(b"vary")
    if vary and "*" in _tokens(vary):
        return "vary-star"
    if not strategy_allows(strategy, media_type(headers)):
        return "strategy"
    return None


def vary_names(headers: Headers) -> Tuple[str, ...]:
    """
    The request headers a response varies on, for keying its variants.

    @param headers: the response headers.
    @return: the lower-cased names listed by every C{Vary} value, without
        C{accept-encoding} (handled by content negotiation), deduplicated and
        sorted. C{*} is kept: check for it (see L{response_bypass_reason})
        first.
    """
    names = set(_tokens(header_values(headers, b"vary")))
    names.discard("accept-encoding")
    return tuple(sorted(names))


_META_TAG = re.compile(rb"<meta\b([^<>]*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(
    rb"""([^\s"'<>/=]+)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'<>`=]+)))?"""
)


def is_soft_404(body: bytes) -> bool:
    """
    Whether a body marks itself as a soft 404 with
    C{<meta name="phantom-404" content="true">}.

    Attribute order, quoting (single, double or none), case, whitespace,
    further attributes and a self-closing C{/>} do not matter. Only the
    first 64 KiB are examined, so the cost is bounded whatever the body.

    @param body: the decoded response body.
    @return: L{True} when the marker is present.
    """
    window = body[:_SOFT_404_WINDOW]
    if b"phantom-404" not in window.lower():
        return False
    for tag in _META_TAG.finditer(window):
        attributes = {}
        for match in _ATTRIBUTE.finditer(tag.group(1)):
            name = match.group(1).lower()
            value = match.group(2)
            if value is None:
                value = match.group(3)
            if value is None:
                # An unquoted value may be followed by a self-closing "/>".
                value = (match.group(4) or b"").rstrip(b"/")
            attributes.setdefault(name, value.strip().lower())
        if (
            attributes.get(b"name") == b"phantom-404"
            and attributes.get(b"content") == b"true"
        ):
            return True
    return False
