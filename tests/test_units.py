"""
Tests for the systemd units in C{conf/}: their contents, and
C{systemd-analyze verify} where it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from twisted.trial.unittest import SynchronousTestCase

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
SERVICE = os.path.join(CONF, "phantom-frame.service")
SOCKET = os.path.join(CONF, "phantom-frame.socket")
INSTALLED = "/opt/phantom-frame/bin/"


def read(path: str) -> str:
    """
    @return: the contents of the file at C{path}.
    """
    with open(path) as f:
        return f.read()


class UnitTests(SynchronousTestCase):
    """
    The service and socket units.
    """

    def test_reload(self) -> None:
        """
        The service reloads with C{SIGHUP}.
        """
        self.assertIn("\nExecReload=/bin/kill -HUP $MAINPID\n", read(SERVICE))

    def test_socket(self) -> None:
        """
        The socket unit listens on an IPv4 address (matching
        C{systemd:domain=INET:index=0}) for the service, and documents the
        configuration it needs.
        """
        text = read(SOCKET)
        self.assertIn("\n[Socket]\nListenStream=0.0.0.0:80\n", text)
        self.assertIn("\nService=phantom-frame.service\n", text)
        self.assertIn('http_listen = "systemd:domain=INET:index=0"', text)
        self.assertIn('control_listen = "unix:', text)

    def test_verify(self) -> None:
        """
        C{systemd-analyze verify} accepts both units (with the installed
        executables replaced by stand-ins, since it checks they exist).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise self.skipTest("systemd-analyze is not installed")
        directory = os.path.abspath(self.mktemp())
        bindir = os.path.join(directory, "bin")
        os.makedirs(bindir)
        for name in ("twistd", "phantom-frame"):
            stand_in = os.path.join(bindir, name)
            with open(stand_in, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(stand_in, 0o755)
        units = []
        for source in (SERVICE, SOCKET):
            target = os.path.join(directory, os.path.basename(source))
            with open(target, "w") as f:
                f.write(read(source).replace(INSTALLED, bindir + "/"))
            units.append(target)
        try:
            done = subprocess.run(
                [analyze, "verify", *units], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise self.skipTest(f"systemd-analyze cannot run here: {e}")
        output = done.stdout + done.stderr
        about_units = [line for line in output.splitlines() if directory in line or "phantom-frame" in line]
        self.assertEqual(about_units, [], output)
        if done.returncode != 0:
            raise self.skipTest(f"systemd-analyze cannot verify units here: {output.strip()}")
