"""
Tests for L{phantom_frame.check}, the C{phantom-frame} command.
"""

from __future__ import annotations

import io
import os
import sys
from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame._version import __version__
from phantom_frame.check import main, summarize
from phantom_frame.config import Config, ServerConfig, load_config
from phantom_frame.proxyconfig import CacheStorageMode, CreateProxyConfig

EXAMPLE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, "conf", "config.toml")
)

VALID = """\
http_port = 8000
https_port = 8443
cert_path = "cert.pem"
key_path = "key.pem"
control_auth = "token"

[server.site]
proxy_url = "http://127.0.0.1:8080"

[server.api]
bind_to = "/api"
proxy_url = "http://127.0.0.1:9000/v1"
proxy_mode = "pre_generate"
cache_policy = "http"
cache_strategy = "only_assets"
compress_strategy = "gzip"
cache_storage_mode = "filesystem"
cache_directory = "/var/cache/pf"
"""

INVALID = """\
http_port = "abc"

[server.api]
cache_stratgy = "all"
proxy_url = "ftp://x"
"""


class MainTests(SynchronousTestCase):
    """
    L{main} runs C{phantom-frame check FILE} and reports through its exit
    status.
    """

    def run_main(self, argv: List[str]) -> Tuple[int, str, str]:
        """
        @param argv: the arguments.
        @return: the exit status, standard output and standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        status = main(argv, stdout=out, stderr=err)
        return status, out.getvalue(), err.getvalue()

    def write(self, content: str) -> str:
        """
        Write a configuration file next to a certificate and a key.

        @param content: the file's contents.
        @return: its path.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        for name in ("cert.pem", "key.pem"):
            with open(os.path.join(directory, name), "w") as f:
                f.write(name)
        path = os.path.join(directory, "config.toml")
        with open(path, "w") as f:
            f.write(content)
        return path

    def test_valid(self) -> None:
        """
        A valid file exits 0 and prints its summary on standard output.
        """
        path = self.write(VALID)
        status, out, err = self.run_main(["check", path])
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, summarize(load_config(path)) + "\n")
        self.assertIn(f"{path}: OK", out)

    def test_invalid(self) -> None:
        """
        An invalid file exits 1 and prints every error, numbered, on standard
        error.
        """
        path = self.write(INVALID)
        status, out, err = self.run_main(["check", path])
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err.splitlines(),
            [
                "Found 3 error(s):",
                "  1. http_port: expected an integer port 0-65535, got 'abc'",
                "  2. server.api.cache_stratgy: unknown key; did you mean"
                " cache_strategy?",
                "  3. server.api.proxy_url: expected an http:// or https:// URL"
                " with a host, got 'ftp://x'",
            ],
        )

    def test_syntaxError(self) -> None:
        """
        A TOML syntax error exits 1 with one error naming the line.
        """
        path = self.write("[server.a]\nbind_to = = '/a'\n")
        status, out, err = self.run_main(["check", path])
        self.assertEqual(status, 1)
        self.assertIn("Found 1 error(s):", err)
        self.assertIn(f"  1. {path}: line 2", err)

    def test_missingFile(self) -> None:
        """
        A file that does not exist exits 1.
        """
        status, out, err = self.run_main(["check", self.mktemp()])
        self.assertEqual(status, 1)
        self.assertIn("cannot read the file", err)

    def test_example(self) -> None:
        """
        The example configuration passes the check.
        """
        status, out, err = self.run_main(["check", EXAMPLE])
        self.assertEqual((status, err), (0, ""))
        self.assertIn("-> http://127.0.0.1:8080", out)

    def test_noCommand(self) -> None:
        """
        No command is a usage error: usage on standard error, exit 2.
        """
        status, out, err = self.run_main([])
        self.assertEqual((status, out), (2, ""))
        self.assertIn("Usage: phantom-frame check FILE", err)

    def test_unknownCommand(self) -> None:
        """
        An unknown command is a usage error naming it.
        """
        status, out, err = self.run_main(["serve", "x"])
        self.assertEqual((status, out), (2, ""))
        self.assertIn("unknown command 'serve'", err)
        self.assertIn("Usage:", err)

    def test_missingFileArgument(self) -> None:
        """
        C{check} without FILE is a usage error.
        """
        status, out, err = self.run_main(["check"])
        self.assertEqual((status, out), (2, ""))
        self.assertIn("FILE is missing", err)

    def test_extraArguments(self) -> None:
        """
        C{check} with more than one FILE is a usage error.
        """
        status, out, err = self.run_main(["check", "a", "b"])
        self.assertEqual(status, 2)
        self.assertIn("unexpected arguments", err)

    def test_version(self) -> None:
        """
        C{--version} prints the version and exits 0.
        """
        self.assertEqual(
            self.run_main(["--version"]), (0, f"phantom-frame {__version__}\n", "")
        )

    def test_help(self) -> None:
        """
        C{--help} prints the usage on standard output and exits 0.
        """
        status, out, err = self.run_main(["--help"])
        self.assertEqual((status, err), (0, ""))
        self.assertIn("Usage: phantom-frame check FILE", out)

    def test_defaultStreams(self) -> None:
        """
        Without arguments, L{main} reads C{sys.argv} and writes to
        C{sys.stdout} and C{sys.stderr}.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "argv", ["phantom-frame", "--version"])
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        self.assertEqual(main(), 0)
        self.assertEqual(out.getvalue(), f"phantom-frame {__version__}\n")
        self.patch(sys, "argv", ["phantom-frame"])
        self.assertEqual(main(), 2)
        self.assertIn("Usage:", err.getvalue())


class SummarizeTests(SynchronousTestCase):
    """
    L{summarize} describes listeners and servers.
    """

    def test_summary(self) -> None:
        """
        The summary shows the listeners, the certificate, whether the control
        site requires a token, and one line per server.
        """
        config = Config(
            https_port=8443,
            cert_path="/etc/pf/cert.pem",
            key_path="/etc/pf/key.pem",
            control_auth="t",
            servers=(
                ServerConfig("site", "*", CreateProxyConfig("http://127.0.0.1:8080")),
                ServerConfig(
                    "api",
                    "/api",
                    CreateProxyConfig(
                        "http://127.0.0.1:9000",
                        cache_storage_mode=CacheStorageMode.FILESYSTEM,
                        cache_directory="/var/cache/pf",
                        proxy_mode="pre_generate",
                        cache_policy="http",
                    ),
                ),
            ),
            source="pf.toml",
        )
        self.assertEqual(
            summarize(config).splitlines(),
            [
                "pf.toml: OK",
                "Listeners:",
                "  http     tcp:3000:interface=0.0.0.0",
                "  https    tcp:8443:interface=0.0.0.0 (certificate /etc/pf/cert.pem)",
                "  control  tcp:17809:interface=127.0.0.1 (bearer token required)",
                "Servers (2):",
                "  site  *    -> http://127.0.0.1:8080  (mode dynamic, policy"
                " prerender, cache all, compress brotli, storage memory)",
                "  api   /api -> http://127.0.0.1:9000  (mode pre_generate, policy"
                " http, cache all, compress brotli, storage filesystem"
                " /var/cache/pf)",
            ],
        )

    def test_openControlSite(self) -> None:
        """
        Without C{control_auth}, the summary says the control site has no
        authentication; without HTTPS, there is no https line; a
        C{control_listen} description is shown as it is.
        """
        text = summarize(Config(control_listen="unix:/run/pf.sock"))
        self.assertIn("  control  unix:/run/pf.sock (no authentication)", text)
        self.assertNotIn("https", text)
        self.assertNotIn("OK", text)
