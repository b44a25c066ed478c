"""
How entries are written in Redis: L{encode_entry} and L{decode_entry} (a
JSON head line, then the coded body), L{encode_variant} (the JSON line that
names an entry's variant in its Redis key) and L{time_to_live}.
"""

from __future__ import annotations

import json
import math
from typing import Optional

from phantom_frame.cache.entry import CacheEntry, Variant
from phantom_frame.cache.store import StoredBody

#: How long past its stale windows an entry with validators stays in Redis
#: (so that it can be revalidated rather than fetched again), at least.
REVALIDATION_GRACE = 60.0


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("latin-1")


def _bytes(value: Optional[str]) -> Optional[bytes]:
    return None if value is None else value.encode("latin-1")


def encode_variant(variant: Variant) -> bytes:
    """
    @return: C{variant} as the JSON line that names its Redis key.
    """
    return json.dumps(list(variant), separators=(",", ":")).encode("utf-8", "surrogatepass")


def encode_entry(entry: CacheEntry, body: bytes) -> bytes:
    """
    @param body: the entry's stored (coded) body.
    @return: the entry as stored in Redis: a JSON head line, then the body.
    """
    head = {
        "key": entry.key,
        "status": entry.status,
        "phrase": _text(entry.phrase),
        "headers": [[_text(n), _text(v)] for n, v in entry.headers],
        "coding": entry.coding,
        "length": entry.identity_length,
        "stored_at": entry.stored_at,
        "vary": list(entry.vary),
        "vary_header": _text(entry.vary_header),
        "variant": list(entry.variant),
        "not_found": entry.not_found,
        "lifetime": None if math.isinf(entry.lifetime) else entry.lifetime,
        "initial_age": entry.initial_age,
        "swr": entry.stale_while_revalidate,
        "sie": entry.stale_if_error,
        "must_revalidate": entry.must_revalidate,
        "etag": _text(entry.etag),
        "last_modified": _text(entry.last_modified),
        "pinned": entry.pinned,
    }
    return json.dumps(head, separators=(",", ":")).encode("utf-8", "surrogatepass") + b"\n" + body


def decode_entry(data: bytes) -> CacheEntry:
    """
    @return: the entry L{encode_entry} made C{data} of (its body in memory).
    @raise ValueError: when C{data} is not such an entry.
    """
    line, newline, body = data.partition(b"\n")
    if not newline:
        raise ValueError("not a stored entry")
    h = json.loads(line.decode("utf-8", "surrogatepass"))
    return CacheEntry(
        key=h["key"],
        status=h["status"],
        phrase=_bytes(h["phrase"]),
        headers=tuple((_bytes(n), _bytes(v)) for n, v in h["headers"]),
        coding=h["coding"],
        body=StoredBody(len(body), body, None),
        identity_length=h["length"],
        stored_at=h["stored_at"],
        vary=tuple(h["vary"]),
        vary_header=_bytes(h["vary_header"]),
        variant=tuple(h["variant"]),
        not_found=h["not_found"],
        lifetime=math.inf if h["lifetime"] is None else h["lifetime"],
        initial_age=h["initial_age"],
        stale_while_revalidate=h["swr"],
        stale_if_error=h["sie"],
        must_revalidate=h["must_revalidate"],
        etag=_bytes(h["etag"]),
        last_modified=_bytes(h["last_modified"]),
        pinned=bool(h.get("pinned", False)),
    )


def time_to_live(entry: CacheEntry, now: float) -> Optional[float]:
    """
    @return: the seconds C{entry} is of use in Redis from C{now}: its
        freshness and stale windows (plus a revalidation grace when it has
        validators); L{None} for an entry fresh until invalidated.
    """
    if math.isinf(entry.lifetime):
        return None
    useful = entry.lifetime + max(entry.stale_while_revalidate, entry.stale_if_error)
    if entry.etag is not None or entry.last_modified is not None:
        useful += max(entry.lifetime, REVALIDATION_GRACE)
    return useful - entry.age(now)


__all__ = ["REVALIDATION_GRACE", "decode_entry", "encode_entry", "encode_variant", "time_to_live"]
