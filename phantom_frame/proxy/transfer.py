"""
Hop-by-hop fields and transfer codings of origin answers: which fields a
proxy keeps to itself (RFC 9110 §7.6.1), and the transfer codings other than
C{chunked} that phantom-frame undoes (RFC 9112 §6.3, §7).
"""

from __future__ import annotations

import zlib
from typing import List, Sequence, Tuple

#: Fields that concern one connection only (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: The hop-by-hop fields and C{Content-Length}: what a head relayed with
#: framing of its own leaves out.
HOP_BY_HOP_AND_LENGTH = HOP_BY_HOP | {b"content-length"}

#: The transfer codings phantom-frame undoes, with their zlib window bits.
INFLATE = {"gzip": 31, "x-gzip": 31, "deflate": 15}


class TransferDecodeError(ValueError):
    """
    A body's transfer coding (C{gzip}, C{deflate}) does not decode.
    """


def connection_named(connection: List[bytes]) -> List[bytes]:
    """
    @param connection: the values of a message's C{Connection} headers.
    @return: the lower-cased header names they list.
    """
    names = []
    for value in connection:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                names.append(token)
    return names


def transfer_codings(values: List[bytes]) -> List[str]:
    """
    @param values: the values of a response's C{Transfer-Encoding} headers.
    @return: the codings they list, in the order they were applied,
        lower-cased, without parameters.
    """
    codings = []
    for value in values:
        for item in value.decode("latin-1").split(","):
            coding = item.split(";", 1)[0].strip().lower()
            if coding:
                codings.append(coding)
    return codings


def applied_codings(value: bytes) -> Tuple[bool, Tuple[str, ...]]:
    """
    @param value: the C{Transfer-Encoding} values of an answer, joined
        with commas.
    @return: whether the body is chunked (its last coding is C{chunked}),
        and the codings to undo beneath, in the order they were applied
        (C{identity} left out).
    @raise ValueError: for a coding phantom-frame cannot undo, named.
    """
    codings = transfer_codings([value])
    chunked = codings[-1:] == ["chunked"]
    applied = tuple(c for c in (codings[:-1] if chunked else codings) if c != "identity")
    for coding in applied:
        if coding not in INFLATE:
            raise ValueError(
                f"the origin sent Transfer-Encoding: {', '.join(codings)},"
                f" which cannot be decoded ({coding})"
            )
    return chunked, applied


class Inflater:
    """
    Undoes the transfer codings of a body as its bytes arrive.
    """

    def __init__(self, codings: Sequence[str]) -> None:
        """
        @param codings: as L{applied_codings} gives them.
        """
        self._inflaters = [zlib.decompressobj(INFLATE[c]) for c in reversed(codings)]

    def decode(self, data: bytes) -> bytes:
        """
        @return: the decoded bytes of C{data} (possibly none yet).
        @raise TransferDecodeError: when C{data} does not decode.
        """
        try:
            for inflater in self._inflaters:
                data = inflater.decompress(data)
        except zlib.error as e:
            raise TransferDecodeError(f"the transfer coding does not decode ({e})")
        return data

    def finish(self) -> bytes:
        """
        The body ended: check that every coding ended with it.

        @return: the last decoded bytes.
        @raise TransferDecodeError: when a coding ends too soon or does not
            decode.
        """
        tail = b""
        try:
            for inflater in self._inflaters:
                tail = inflater.decompress(tail) + inflater.flush()
                if not inflater.eof:
                    raise TransferDecodeError("the transfer-coded body ends too soon")
        except zlib.error as e:
            raise TransferDecodeError(f"the transfer coding does not decode ({e})")
        return tail
