"""
Tests for the environment of supervised origins: the proxy's, plus the
variables of the configuration's C{dotenv} file.
"""

from __future__ import annotations

import os
import shlex
import sys

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from phantom_frame.config import load_config
from phantom_frame.ops.supervise import origin_environment
from phantom_frame.service import build_service

from tests.ops.test_supervise import Logged

PYTHON = shlex.quote(sys.executable)


class OriginEnvironmentTests(SynchronousTestCase):
    """
    L{origin_environment} adds a C{.env} file's variables to the proxy's.
    """

    def write(self, text: str) -> str:
        """
        @return: the absolute path of a new file holding C{text}.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_file(self) -> None:
        """
        The file's variables are added; the proxy's own win.
        """
        path = self.write("A=from-file\nexport B='quoted value'\nC=from-file\n")
        env = origin_environment(path, {"C": "from-proxy", "PATH": "/bin"})
        self.assertEqual(env, {"A": "from-file", "B": "quoted value", "C": "from-proxy", "PATH": "/bin"})

    def test_dotenvTrue(self) -> None:
        """
        C{dotenv = true} reads C{./.env} (none is no variables).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        self.assertEqual(origin_environment(True, {}), {})
        with open(".env", "w") as f:
            f.write("TOKEN=abc\n")
        self.assertEqual(origin_environment(True, {}), {"TOKEN": "abc"})

    def test_off(self) -> None:
        """
        Without C{dotenv}, the proxy's environment, copied.
        """
        environ = {"X": "1"}
        env = origin_environment(False, environ)
        self.assertEqual(env, environ)
        self.assertIsNot(env, environ)

    def test_defaultIsProcess(self) -> None:
        """
        By default the proxy's environment is C{os.environ}.
        """
        self.assertEqual(origin_environment(False), dict(os.environ))


CONFIG = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
dotenv = "origin.env"

[server.site]
proxy_url = "http://127.0.0.1:1"
execute = "{command}"
"""

#: Prints the variable the C{.env} file sets, then waits.
PRINT = "import os, signal, sys; print('secret=' + os.environ.get('PF_ORIGIN_SECRET', '-')); sys.stdout.flush(); signal.pause()"


class ServiceEnvironmentTests(TestCase):
    """
    A real origin command started by the proxy sees the C{.env} file's
    variables.
    """

    timeout = 60

    async def test_execute(self) -> None:
        """
        The variable set only in the C{dotenv} file reaches the C{execute}
        command.
        """
        self.assertNotIn("PF_ORIGIN_SECRET", os.environ)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "origin.env"), "w") as f:
            f.write("PF_ORIGIN_SECRET=s3cret\n")
        path = os.path.join(directory, "config.toml")
        command = f"{PYTHON} -u -c {shlex.quote(PRINT)}"
        with open(path, "w") as f:
            f.write(CONFIG.format(command=command.replace("\\", "\\\\").replace('"', '\\"')))
        logged = Logged(self)
        top = build_service(load_config(path), reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(lambda: top.running and top.stopService())
        await logged.matches(r"^\[site\] secret=(.*)$")
        self.assertIn("[site] secret=s3cret", logged.texts("phantom_frame.origin"))
        await top.stopService()
