"""
C{PURGE PATH} on the proxy listeners: who may (L{PurgeAccess}, asked by
L{phantom_frame.proxy.decision.Decider.admit}), and the answer to an
authorised one (L{purge_answer}, for a
L{phantom_frame.proxy.decision.Purge}): the server's entries matching the
path are dropped as the control site's C{/invalidate} drops them, and the
client is told how many.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any, Optional, Sequence

from twisted.logger import Logger

from phantom_frame.proxy.answers import error_response

log = Logger(namespace="phantom_frame.proxy")


class PurgeAccess:
    """
    Who may C{PURGE}: a client whose address is in C{purge_allow}, or one
    sending C{Authorization: Bearer TOKEN} with the control site's token
    (one such header, the scheme in any case, compared in constant time).
    """

    def __init__(self, allow: Sequence[str]) -> None:
        """
        @param allow: C{purge_allow}: IP addresses or CIDR networks.
        @raise ValueError: for one that is neither.
        """
        self._networks = [ipaddress.ip_network(cidr, strict=False) for cidr in allow]

    def allowed(self, client: Optional[str]) -> bool:
        """
        @param client: an IP address (an IPv4-mapped IPv6 one counts as
            its IPv4 address), or L{None}.
        @return: whether it is in C{purge_allow}.
        """
        if client is None or not self._networks:
            return False
        try:
            address: Any = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        return any(address in network for network in self._networks)

    def refusal(self, view: Any, token: Optional[str]) -> Optional[int]:
        """
        @param view: the request's L{phantom_frame.proxy.view.RequestView}.
        @param token: the control site's token, or L{None} for none.
        @return: L{None} when the request may purge; 401 when it has no
            credentials; 403 when its token is wrong (or there is no token
            to compare it with).
        """
        if self.allowed(view.client):
            return None
        credentials = view.values(b"authorization")
        if not credentials:
            return 401
        scheme, _, given = credentials[0].strip().partition(b" ")
        if (
            token is None
            or len(credentials) != 1
            or scheme.lower() != b"bearer"
            or not hmac.compare_digest(given.strip(), token.encode("utf-8"))
        ):
            return 403
        return None


def purge_patterns(pattern: str) -> list:
    """
    @param pattern: a C{PURGE}'s stripped path, with its query if it has one.
    @return: the invalidation patterns it stands for: itself, and for a
        path without a query every query form of it as well (SPEC §4).
    """
    if "?" in pattern:
        return [pattern]
    return [pattern, pattern + "?*"]


def purge_answer(server: Any, request: Any, pattern: str) -> bytes:
    """
    Invalidate C{pattern} on C{server} (snapshots of a pre-generated server
    kept until they are fetched again, as C{/invalidate} does) and answer
    200 with C{{"purged": N}}; a pattern that cannot be used (too long) is
    400.

    @param server: a L{phantom_frame.proxy.server.ProxyServer}.
    @param request: the twisted.web request.
    @return: the body, to be returned from C{render}.
    """
    try:
        count = sum(server.invalidate(p, keep_snapshots=True) for p in purge_patterns(pattern))
    except ValueError as e:
        return error_response(request, 400, f"Bad Request: {e}")
    log.info(
        "server {server}: PURGE {pattern!r} dropped {count} entries",
        server=server.name,
        pattern=pattern,
        count=count,
    )
    body = json.dumps({"purged": count}).encode("ascii") + b"\n"
    request.setResponseCode(200)
    headers = request.responseHeaders
    headers.setRawHeaders(b"content-type", [b"application/json"])
    headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
    headers.setRawHeaders(b"cache-control", [b"no-store"])
    return body
