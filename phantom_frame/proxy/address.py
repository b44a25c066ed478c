"""
Where an origin is: L{OriginAddress} (the key of its connections in an
L{phantom_frame.proxy.pool.OriginPool}) and L{endpoint_factory}, the
endpoints that reach one.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

import attr
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint

_DEFAULT_PORTS = {"http": 80, "https": 443}


@attr.s(auto_attribs=True, frozen=True, slots=True, cache_hash=True)
class OriginAddress:
    """
    Where an origin is: the key of its connections in a pool.

    @ivar scheme: C{"http"} or C{"https"}.
    @ivar host: a host name or an IP address (IPv6 without brackets).
    @ivar port: the TCP port.
    """

    scheme: str
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> OriginAddress:
        """
        @param url: C{http[s]://host[:port][/path]}; the path is ignored.
        @raise ValueError: when C{url} is not an http(s) URL with a host.
        """
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"expected an http(s) URL with a host, got {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme])

    @property
    def authority(self) -> bytes:
        """
        The C{Host} to send: the host, and the port unless the scheme's.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[self.scheme]:
            host = f"{host}:{self.port}"
        return host.encode("idna")


def endpoint_factory(reactor: Any, trustRoot: Any = None) -> Callable[[OriginAddress], IStreamClientEndpoint]:
    """
    @param reactor: connects (and resolves names).
    @param trustRoot: for C{https} origins, the certificate authorities to
        trust (L{twisted.internet.ssl.optionsForClientTLS}); the platform's
        when C{None}.
    @return: a function giving the endpoint of an L{OriginAddress}: TCP to an
        IP address, L{HostnameEndpoint} to a name, wrapped in TLS verifying
        the host name for C{https}.
    """

    def endpoint_for(address: OriginAddress) -> IStreamClientEndpoint:
        host = address.host
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(reactor, host, address.port)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(reactor, host, address.port)
        else:
            endpoint = HostnameEndpoint(reactor, host, address.port)
        if address.scheme == "https":
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(host, trustRoot=trustRoot), endpoint)
        return endpoint

    return endpoint_for
