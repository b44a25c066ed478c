"""
Tests that the client limits of a configuration reach the proxy site at
start (L{phantom_frame.service.build_service}) and on reload
(L{phantom_frame.ops.reload.Reloader}).
"""

from __future__ import annotations

import os

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import load_config
from phantom_frame.http.limits import ClientLimits
from phantom_frame.ops.reload import Reloader
from phantom_frame.service import build_service
from tests.memory import Proxy
from tests.origin import Origin

BASE = """
http_port = 0
control_port = 0
bind_address = "127.0.0.1"
{root}
[server.site]
proxy_url = "http://origin.example"
"""


class ClientLimitsAppliedTests(SynchronousTestCase):
    """
    The site holds the configured limits.
    """

    def write(self, root: str) -> str:
        """
        @return: the path of a configuration with C{root} keys.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(BASE.format(root=root))
        return path

    def test_start(self) -> None:
        """
        L{build_service} gives the proxy site the configuration's limits.
        """
        path = self.write('max_header_bytes = "4KB"\nallowed_hosts = ["example.com"]')
        top = build_service(load_config(path), MemoryReactorClock())
        self.assertEqual(top.site.limits, ClientLimits(max_header_bytes=4000, allowed_hosts=("example.com",)))

    def test_reload(self) -> None:
        """
        A reload applies changed limits at once: the next request head is
        held to them.
        """
        path = self.write("")
        config = load_config(path)
        proxy = Proxy(self, config, Origin())
        reloader = Reloader(path, config, proxy.handle, proxy.site, proxy.build)
        with open(path, "w") as f:
            f.write(BASE.format(root='allowed_hosts = ["example.com"]\nclient_header_timeout = 3'))
        result = reloader.reload()
        self.assertEqual(result.applied, ("client_header_timeout", "allowed_hosts"))
        self.assertEqual(proxy.site.limits, ClientLimits(client_header_timeout=3, allowed_hosts=("example.com",)))
        protocol = proxy.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 421 "), transport.value())
        protocol.connectionLost(None)
