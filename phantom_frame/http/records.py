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
                 code: int, length: int, request_id: str = "") -> None:
        self._channel = channel
        self.method = method
        self.uri = uri
        self._headers = headers
        self.code = code
        self.sentLength = length
        self._requestId = request_id

    def getClientAddress(self) -> Any:
        return self._channel.transport.getPeer()

    def getHeader(self, name: bytes) -> Optional[bytes]:
        key = name.decode("latin-1").lower()
        if key == "x-request-id" and self._requestId:
            return self._requestId.encode("latin-1")
        value = self._headers.get(key)
        return None if value is None else value.encode("latin-1")
