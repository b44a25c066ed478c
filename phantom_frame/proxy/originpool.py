"""
The origin connection pool: twisted.web's L{HTTPConnectionPool}, with two
things its client leaves out that a proxy needs.

 - Headers named in the origin's C{Connection} are dropped from the
   response (RFC 9110 §7.6.1). The client keeps C{Connection} itself out of
   C{response.headers}, so nobody downstream could see which headers it
   names.
 - A C{Transfer-Encoding} other than C{chunked} is read (RFC 9112 §6.3): a
   body whose last coding is not C{chunked} ends when the origin closes the
   connection, and the transfer codings C{gzip}, C{x-gzip} and C{deflate}
   are undone (they are hop-by-hop: what reaches the client is the
   representation). The client fails such responses outright.

Both lean on the client's internals (its per-connection protocol and its
response parser); tests over raw sockets pin them.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, List, Optional

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.http import (
    PotentialDataLoss,
    _ChunkedTransferDecoder,
    _DataLoss,
    _IdentityTransferDecoder,
)

#: The transfer codings phantom-frame undoes, with their zlib window bits.
_INFLATE = {"gzip": 31, "x-gzip": 31, "deflate": 15}


class UnknownTransferCoding(Exception):
    """
    The origin framed its body with a transfer coding phantom-frame cannot
    undo.
    """


class TransferDecodeError(Exception):
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


class _DecodedTransfer:
    """
    A body decoder for the client's parser: C{chunked} framing or a body
    delimited by the connection's close, with the transfer codings on top
    undone as the bytes arrive.

    Errors follow the parser's conventions: an exception from
    C{dataReceived} makes the client drop the connection, and then
    C{noMoreData} raises C{_DataLoss} (a failed body) rather than
    C{PotentialDataLoss} (a body that ended with the connection).
    """

    def __init__(
        self,
        codings: List[str],
        chunked: bool,
        dataCallback: Callable[[bytes], None],
        finishCallback: Callable[[bytes], None],
    ) -> None:
        self._inflaters = [zlib.decompressobj(_INFLATE[c]) for c in reversed(codings) if c in _INFLATE]
        self._deliver = dataCallback
        self._finish = finishCallback
        self._broken = False
        framing: Any
        if chunked:
            framing = _ChunkedTransferDecoder(self._decoded, self._complete)
        else:
            framing = _IdentityTransferDecoder(None, self._decoded, self._complete)
        self._framing = framing

    def dataReceived(self, data: bytes) -> None:
        self._framing.dataReceived(data)

    def _decoded(self, data: bytes) -> None:
        try:
            for inflater in self._inflaters:
                data = inflater.decompress(data)
        except zlib.error as e:
            self._broken = True
            raise TransferDecodeError(f"the transfer coding does not decode ({e})")
        if data:
            self._deliver(data)

    def _complete(self, rest: bytes) -> None:
        tail = b""
        try:
            for inflater in self._inflaters:
                tail = inflater.decompress(tail) + inflater.flush()
                if not inflater.eof:
                    raise TransferDecodeError("the transfer-coded body ends too soon")
        except zlib.error as e:
            self._broken = True
            raise TransferDecodeError(f"the transfer coding does not decode ({e})")
        except TransferDecodeError:
            self._broken = True
            raise
        if tail:
            self._deliver(tail)
        self._finish(rest)

    def noMoreData(self) -> None:
        if self._broken:
            raise _DataLoss()
        try:
            self._framing.noMoreData()
        except (PotentialDataLoss, _DataLoss):
            if self._broken:
                raise _DataLoss()
            raise
        except Exception:
            raise _DataLoss()


class _TransferDecoders(dict):
    """
    Stands in for the parser's table of transfer decoders (which knows
    C{chunked} alone, as the first header's whole value): every lookup reads
    all of the response's C{Transfer-Encoding} values.
    """

    def __init__(self, parser: Any) -> None:
        super().__init__()
        self._parser = parser

    def __missing__(self, key: bytes) -> Callable[..., Any]:
        codings = transfer_codings(self._parser.connHeaders.getRawHeaders(b"transfer-encoding", []))
        if codings == ["chunked"]:
            return _ChunkedTransferDecoder
        chunked = bool(codings) and codings[-1] == "chunked"
        applied = codings[:-1] if chunked else codings
        for coding in applied:
            if coding != "identity" and coding not in _INFLATE:
                raise UnknownTransferCoding(
                    f"the origin sent Transfer-Encoding: {', '.join(codings)},"
                    f" which cannot be decoded ({coding})"
                )
        return lambda data, finish: _DecodedTransfer(applied, chunked, data, finish)


def _drop_connection_named(response: Any, parser: Any) -> Any:
    """
    Remove from C{response}'s headers those its C{Connection} names.
    """
    for name in connection_named(parser.connHeaders.getRawHeaders(b"connection", [])):
        response.headers.removeHeader(name)
    return response


class _OriginClientProtocol(HTTP11ClientProtocol):
    """
    One pooled connection to an origin (see the module docstring).
    """

    def request(self, request: Any) -> Any:
        before = self._parser
        d = super().request(request)
        parser: Optional[Any] = self._parser
        if parser is not None and parser is not before:
            parser._transferDecoders = _TransferDecoders(parser)
            d.addCallback(_drop_connection_named, parser)
        return d


class _OriginClientFactory(_HTTP11ClientFactory):
    """
    Makes L{_OriginClientProtocol}s for the pool.
    """

    def buildProtocol(self, addr: Any) -> _OriginClientProtocol:
        return _OriginClientProtocol(self._quiescentCallback)


class OriginPool(HTTPConnectionPool):
    """
    An L{HTTPConnectionPool} whose connections drop the headers an origin's
    C{Connection} names and read any C{Transfer-Encoding} (see the module
    docstring); use it like its base.
    """

    _factory = _OriginClientFactory
