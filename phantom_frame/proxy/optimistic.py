"""
Optimistic sends, for the HTTP/1.1 channel's answers and the origin
client's requests.

L{twisted.internet.abstract.FileDescriptor.write} never sends at once: it
buffers, registers the socket for writing with the reactor, sends on the next
pass and unregisters (two C{epoll_ctl} calls and a loop pass per response).
When a plain TCP connection has nothing buffered, sending at once is safe and
much cheaper; whatever the kernel does not take goes through the ordinary
C{transport.write()}, so ordering and back-pressure are unchanged.

This reads private C{FileDescriptor} state (C{dataBuffer},
C{_tempDataBuffer}), pinned by C{tests/test_optimistic.py}; anything but a
plain TCP transport (TLS, UNIX sockets, test transports) takes the
ordinary path. Set C{PHANTOM_FRAME_OPTIMISTIC_SEND=0} to turn it off.
"""

from __future__ import annotations

import os
from typing import Any, List

from twisted.internet import tcp

#: Whether optimistic sends are used at all.
ENABLED = os.environ.get("PHANTOM_FRAME_OPTIMISTIC_SEND", "1") != "0"


def send(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it at once when that is safe.
    """
    if ENABLED and type(transport) is tcp.Server and not transport.TLS:
        send_now(transport, data)
    else:
        transport.write(data)


def send_parts(transport: Any, parts: List[bytes]) -> None:
    """
    Write the concatenation of C{parts} to C{transport}, sending it at once
    when that is safe (L{send_parts_now}).
    """
    if ENABLED and type(transport) is tcp.Server and not transport.TLS:
        send_parts_now(transport, parts)
    else:
        transport.write(b"".join(parts))


def _clear(transport: Any) -> bool:
    """
    @return: whether nothing waits to be written before new data on
        C{transport}, which is connected and not closing.
    """
    return (
        transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    )


def send_parts_now(transport: Any, parts: List[bytes]) -> None:
    """
    As L{send_now}, for data in parts: the kernel gathers them
    (C{sendmsg}), so a large body is not copied into one string first.
    """
    if _clear(transport):
        try:
            sent = transport.socket.sendmsg(parts)
        except OSError:
            sent = 0
        if sent >= sum(map(len, parts)):
            return
        transport.write(b"".join(parts)[sent:])
        return
    transport.write(b"".join(parts))


def send_now(transport: Any, data: bytes) -> None:
    """
    Send what the socket takes now if nothing is waiting before it, and
    write the rest the ordinary way.
    """
    if _clear(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN and friends, or a broken connection: the ordinary path
            # retries, or finds and reports the error.
            sent = 0
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)
