"""
What the access log reads of a request the channel answered itself (a hit,
a pass-through or a fill on the byte path), which has no twisted.web
C{Request}.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class FastHitRecord:
    """
    What an access-log formatter reads of a request, for a hit answered by
    the fast path (which builds no L{Request}).
    """

    clientproto = b"HTTP/1.1"

    def __init__(self, channel: Any, method: bytes, uri: bytes, headers: Dict[str, str],
                 code: int, length: int) -> None:
        self._channel = channel
        self.method = method
        self.uri = uri
        self._headers = headers
        self.code = code
        self.sentLength = length

    def getClientAddress(self) -> Any:
        return self._channel.transport.getPeer()

    def getHeader(self, name: bytes) -> Optional[bytes]:
        value = self._headers.get(name.decode("latin-1").lower())
        return None if value is None else value.encode("latin-1")
