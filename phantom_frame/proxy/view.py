"""
L{RequestView}: what the proxy reads of a client request, the same whether
the HTTP/1.1 channel parsed it itself or twisted.web built a L{Request}.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

Header = Tuple[bytes, bytes]


class RequestView:
    """
    One client request, as the decision and the origin side see it.

    @ivar method: the request method.
    @ivar path: the raw path with the server's prefix stripped, no query.
    @ivar query: the raw query without C{?} (C{b""} for none).
    @ivar headers: the request headers by lower-cased name, repeated ones
        joined with C{", "}, as text (latin-1).
    @ivar raw: the request headers as received, for forwarding; C{None}
        when no header name was repeated and L{headers} holds them all.
    @ivar client: the client's IP address, when known.
    @ivar secure: whether it came over TLS.
    @ivar prefix: the C{bind_to} prefix it was routed by (C{b""} for none).
    @ivar prepared: what the decision keeps of a view that is decided
        again (see L{phantom_frame.proxy.decision.Decider.decide}), or
        C{None}.
    """

    __slots__ = ("method", "path", "query", "headers", "raw", "client", "secure", "prefix", "prepared")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: Dict[str, str],
        raw: Optional[Sequence[Header]],
        client: Optional[str] = None,
        secure: bool = False,
        prefix: bytes = b"",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.raw = raw
        self.client = client
        self.secure = secure
        self.prefix = prefix
        self.prepared: object = None

    @property
    def target(self) -> bytes:
        """
        @return: the stripped path and query, as sent to the origin.
        """
        return self.path + b"?" + self.query if self.query else self.path

    def header(self, name: str) -> Optional[str]:
        """
        @param name: a lower-cased header name.
        @return: its value (repeated headers joined), or C{None}.
        """
        return self.headers.get(name)

    def values(self, name: bytes) -> List[bytes]:
        """
        @param name: a lower-cased header name.
        @return: every value of that header, as received.
        """
        raw = self.raw
        if raw is None:
            value = self.headers.get(name.decode("latin-1"))
            return [] if value is None else [value.encode("latin-1")]
        return [v for n, v in raw if n.lower() == name]

    def pairs(self) -> Sequence[Header]:
        """
        @return: the request headers as received (names lower-cased when
            the view was made from L{headers} alone).
        """
        if self.raw is not None:
            return self.raw
        return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in self.headers.items()]


def joined_headers(raw: Sequence[Header]) -> Dict[str, str]:
    """
    @return: C{raw} by lower-cased name as text, repeated names joined with
        C{", "} (as L{RequestView.headers}).
    """
    headers: Dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = headers.get(key)
        headers[key] = text if old is None else old + ", " + text
    return headers


def view_of(request, path: bytes, query: bytes, prefix: bytes = b"") -> RequestView:
    """
    @param request: a twisted.web L{Request}.
    @param path: its prefix-stripped raw path.
    @param query: its raw query.
    @param prefix: the prefix it was routed by.
    @return: the request's view.
    """
    raw = [
        (name, value)
        for name, values in request.requestHeaders.getAllRawHeaders()
        for value in values
    ]
    address = request.getClientAddress()
    return RequestView(
        request.method,
        path,
        query,
        joined_headers(raw),
        raw,
        getattr(address, "host", None),
        bool(request.isSecure()),
        prefix,
    )
