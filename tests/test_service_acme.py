"""
Tests for L{phantom_frame.service.build_service} with an C{[acme]} table,
on a memory reactor: where the ACME service and its challenge route go,
and the twistd plugin's options.
"""

from __future__ import annotations

import os
from typing import Tuple

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame import tap
from phantom_frame.config import load_config
from phantom_frame.config.acme import CHALLENGE_PATH
from phantom_frame.service import build_service

from .ops.support_acme import NOW, certificate, serial


def write_config(testcase: SynchronousTestCase, acme: str) -> Tuple[str, str]:
    """
    Write a configuration with an HTTPS listener and an C{[acme]} table.

    @param acme: the table's extra lines.
    @return: the file's path and the storage directory.
    """
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, "config.toml")
    with open(path, "w") as f:
        f.write(
            "http_port = 0\nhttps_port = 0\ncontrol_port = 0\nbind_address = \"127.0.0.1\"\n"
            '[acme]\ndirectory = "https://acme.example/dir"\ndomains = ["example.com"]\n'
            f'storage = "acme"\n{acme}\n'
            '[server.site]\nproxy_url = "http://127.0.0.1:9"\n'
        )
    return path, os.path.join(directory, "acme")


class BuildServiceTests(SynchronousTestCase):
    """
    L{build_service} with C{[acme]}, on a memory reactor.
    """

    def test_wiring(self) -> None:
        """
        The ACME service starts after the listeners, its challenge route is
        in front of the servers' (and stays there through reloads), and
        the HTTPS listener serves its certificate: here the stored one,
        without an attempt.
        """
        path, storage = write_config(self, 'email = "a@example.com"')
        pems = certificate(["example.com"])
        os.makedirs(storage)
        for name, data in zip(("fullchain.pem", "privkey.pem"), pems):
            with open(os.path.join(storage, name), "wb") as f:
                f.write(data)
        memory = MemoryReactorClock()
        memory.advance(NOW)
        top = build_service(load_config(path), memory)
        kinds = [type(child).__name__ for child in top]
        self.assertEqual(kinds[5:], ["StreamServerEndpointService"] * 2 + ["AcmeService", "HangupReloader", "StreamServerEndpointService"])
        self.assertIs(top.acme, list(top)[7])
        challenge = (CHALLENGE_PATH, top.acme.challenges, None)
        self.assertIn(challenge, top.site.resource.routes)
        top.startService()
        self.addCleanup(top.stopService)
        https = memory.tcpServers[1][1]
        self.assertIsNotNone(https.buildProtocol(None))
        self.assertEqual(top.acme.certificate.serial_number, serial(pems[0]))
        result = top.reloader.reload()
        self.assertIsNone(result.certificate)
        self.assertIn(challenge, top.site.resource.routes)
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("a@example.com", "b@example.com"))
        result = top.reloader.reload()
        self.assertEqual(result.restart_required, ("acme",))
        self.assertIn(challenge, top.site.resource.routes)

    def test_plugin(self) -> None:
        """
        The twistd plugin accepts an HTTPS listener with C{[acme]} and no
        certificate files.
        """
        path, _ = write_config(self, 'email = "a@example.com"')
        options = tap.Options()
        options.parseOptions(["--config", path])
        self.assertIsNone(options["tls"])
        self.assertEqual(options["parsed"].acme.domains, ("example.com",))
