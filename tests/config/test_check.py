"""
Tests for L{phantom_frame.config.check}, the C{phantom-frame} command.
"""

from __future__ import annotations

import io
import os
import sys
from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame._version import __version__
from phantom_frame.config import Config, ServerConfig, load_config
from phantom_frame.cli import main
from phantom_frame.config.check import check, physical_memory, risks, size, summarize
from phantom_frame.proxy.settings import CacheStorageMode, CreateProxyConfig

from .certificates import write_pair

EXAMPLE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "conf", "config.toml")
)

VALID = """\
http_port = 8000
https_port = 8443
cert_path = "cert.pem"
key_path = "key.pem"
control_auth = "token"

[server.site]
proxy_url = "http://127.0.0.1:8080"
exclude_paths = ["/account*", "/cart*", "/login", "/checkout*", "/admin*", "/me", "/profile*"]

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
        write_pair(directory)
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

    def test_readerGone(self) -> None:
        """
        When the reader of standard output goes away (C{phantom-frame check
        FILE | head -1}), the command exits quietly with its own status, and
        the stream's last flush raises nothing either.
        """
        read, write = os.pipe()
        os.close(read)
        stream = os.fdopen(write, "w", buffering=1)
        self.addCleanup(stream.close)
        err = io.StringIO()
        self.assertEqual(main(["check", self.write(VALID)], stdout=stream, stderr=err), 0)
        self.assertEqual(err.getvalue(), "")
        stream.write("left in the buffer\n")
        stream.flush()


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
                "Logging: access log on, format text; shutdown grace 10s",
                "Servers (2):",
                "  site  *    -> http://127.0.0.1:8080  (mode dynamic, policy"
                " prerender, cache all, compress brotli, storage memory)",
                "      include all; exclude none",
                "      cache_max_bytes 256 MiB, max_cacheable_bytes 8 MiB, upstream_timeout 30s",
                "  api   /api -> http://127.0.0.1:9000  (mode pre_generate, policy"
                " http, cache all, compress brotli, storage filesystem"
                " /var/cache/pf)",
                "      include all; exclude none",
                "      cache_max_bytes 256 MiB, max_cacheable_bytes 8 MiB, upstream_timeout 30s",
                "      snapshots 0 path(s), fallthrough off, concurrency 8",
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

    def test_details(self) -> None:
        """
        Under each server, the summary shows its patterns, freshness
        settings, webhooks and origin command when it has them.
        """
        from phantom_frame.proxy.settings import Webhook, WebhookType

        proxy = CreateProxyConfig(
            "http://127.0.0.1:8080",
            include_paths=("/docs/*", "POST /search"),
            exclude_paths=("/docs/private/*",),
            cache_max_bytes=64 * 1024 * 1024,
            max_cacheable_bytes=1536 * 1024,
            upstream_timeout=2.5,
            cache_ttl=300,
            stale_if_error=60,
            webhooks=(Webhook("http://hooks/a", WebhookType.BLOCKING), Webhook("http://hooks/b")),
            execute="npm start",
            execute_dir="/srv/site",
        )
        text = summarize(Config(access_log=False, log_format="json", shutdown_grace=2.5,
                                servers=(ServerConfig("site", "*", proxy),)))
        lines = text.splitlines()
        self.assertIn("Logging: access log off, format json; shutdown grace 2.5s", lines)
        self.assertEqual(
            lines[lines.index("Servers (1):") + 2:],
            [
                "      include /docs/*, POST /search; exclude /docs/private/*",
                "      cache_max_bytes 64 MiB, max_cacheable_bytes 1.5 MiB, upstream_timeout 2.5s",
                "      cache_ttl 300s, stale_while_revalidate -, stale_if_error 60s",
                "      webhooks 2 (blocking, notify)",
                "      origin command 'npm start' in /srv/site",
            ],
        )

    def test_size(self) -> None:
        """
        Sizes are shown in the largest binary unit that keeps them at least
        one.
        """
        self.assertEqual(
            [size(n) for n in (0, 512, 1024, 1536, 256 * 1024 ** 2, 3 * 1024 ** 3, 5 * 1024 ** 5)],
            ["0 B", "512 B", "1 KiB", "1.5 KiB", "256 MiB", "3 GiB", "5120 TiB"],
        )


GiB = 1024 ** 3


def server(name: str, bind_to: str = "*", **proxy: object) -> ServerConfig:
    """
    @return: a server block in front of a local origin.
    """
    return ServerConfig(name, bind_to, CreateProxyConfig("http://127.0.0.1:8080", **proxy))


SAFE = ("/account*", "/cart*", "/login", "/checkout*", "/admin*", "/me", "/profile*")


class RiskTests(SynchronousTestCase):
    """
    L{risks} and the warnings of C{phantom-frame check}.
    """

    def memory(self, amount: object = 16 * GiB):
        """
        @return: a function giving C{amount} as the machine's memory.
        """
        return lambda: amount

    def test_safe(self) -> None:
        """
        A configuration with a local control site, personalised paths
        excluded and caches that fit in memory has no warnings.
        """
        config = Config(servers=(server("site", exclude_paths=SAFE),))
        self.assertEqual(risks(config, self.memory()), [])

    def test_open_control(self) -> None:
        """
        A control site beyond loopback without C{control_auth} is a risk;
        with a token, on loopback, or on a UNIX socket, it is not.
        """
        servers = (server("site", exclude_paths=SAFE),)
        exposed = [
            Config(control_bind_address="0.0.0.0", servers=servers),
            Config(control_bind_address="10.0.0.5", servers=servers),
            Config(control_listen="tcp:17809", servers=servers),
            Config(control_listen="tcp6:17809:interface=\\:\\:", servers=servers),
        ]
        for config in exposed:
            [warning] = risks(config, self.memory())
            self.assertTrue(warning.startswith("control site: listens on "), warning)
            self.assertIn("without control_auth", warning)
        self.assertIn("listens on every interface", risks(exposed[2], self.memory())[0])
        self.assertIn("listens on ::", risks(exposed[3], self.memory())[0])
        safe = [
            Config(control_bind_address="0.0.0.0", control_auth="t", servers=servers),
            Config(control_bind_address="::1", servers=servers),
            Config(control_bind_address="localhost", servers=servers),
            Config(control_listen="unix:/run/pf.sock", servers=servers),
            Config(control_listen="tcp:17809:interface=127.0.0.1", servers=servers),
        ]
        for config in safe:
            self.assertEqual(risks(config, self.memory()), [], config)

    def test_personal_paths(self) -> None:
        """
        A server that caches paths that look personalised is a risk, naming
        them; excluded, not included, not cached at all, or pure
        pre-generated, it is not.
        """
        config = Config(
            servers=(
                server("site", exclude_paths=("/admin/*", "/login")),
                server("api", "/api", include_paths=("/public/*",)),
                server("shop", "/shop", include_paths=("/cart", "/products/*")),
                server("off", "/off", cache_strategy="none"),
                server("docs", "/docs", proxy_mode="pre_generate"),
                server("mixed", "/mixed", proxy_mode="pre_generate", pre_generate_fallthrough=True,
                       exclude_paths=SAFE),
            )
        )
        found = risks(config, self.memory())
        self.assertEqual(len(found), 2, found)
        self.assertTrue(
            found[0].startswith(
                "server.site: caches paths that look personalised"
                " (/account, /cart, /checkout, /admin, /me, /profile)"
            ),
            found[0],
        )
        self.assertTrue(found[1].startswith("server.shop: caches paths that look personalised (/cart)"), found[1])

    def test_cookies_ignored(self) -> None:
        """
        A caching server with C{cookie_policy = "ignore"} is a risk; one
        that caches nothing, or only pre-generated pages, is not.
        """
        config = Config(
            servers=(
                server("site", exclude_paths=SAFE, cookie_policy="ignore"),
                server("strict", "/strict", exclude_paths=SAFE, ignore_cookies=("_ga*",)),
                server("off", "/off", cookie_policy="ignore", cache_strategy="none"),
                server("docs", "/docs", cookie_policy="ignore", proxy_mode="pre_generate"),
                server("mixed", "/mixed", exclude_paths=SAFE, cookie_policy="ignore",
                       proxy_mode="pre_generate", pre_generate_fallthrough=True),
            )
        )
        found = risks(config, self.memory())
        self.assertEqual([warning.split(":")[0] for warning in found], ["server.site", "server.mixed"])
        self.assertIn('cookie_policy = "ignore"', found[0])
        self.assertIn('prefer "strict"', found[0])

    def test_memory(self) -> None:
        """
        The C{cache_max_bytes} of memory-mode servers (with caching on)
        adding up to more than the machine's memory is a risk; unknown
        memory is not checked.
        """
        config = Config(
            servers=(
                server("a", exclude_paths=SAFE, cache_max_bytes=3 * GiB),
                server("b", "/b", exclude_paths=SAFE, cache_max_bytes=2 * GiB),
                server("disk", "/disk", exclude_paths=SAFE, cache_max_bytes=100 * GiB,
                       cache_storage_mode="filesystem"),
                server("none", "/none", cache_max_bytes=100 * GiB, cache_strategy="none"),
            )
        )
        self.assertEqual(risks(config, self.memory(8 * GiB)), [])
        self.assertEqual(
            risks(config, self.memory(4 * GiB)),
            [
                "cache_max_bytes: the memory-mode servers may hold 5 GiB together"
                " (a 3 GiB, b 2 GiB), more than this machine's 4 GiB of memory"
            ],
        )
        self.assertEqual(risks(config, self.memory(None)), [])

    def test_physical_memory(self) -> None:
        """
        The machine's memory is known here, and plausible.
        """
        memory = physical_memory()
        if memory is None:
            raise self.skipTest("memory size unknown on this platform")
        self.assertGreater(memory, 16 * 1024 * 1024)

    def test_check_prints_warnings(self) -> None:
        """
        C{check} prints the numbered warnings after the summary and still
        exits 0.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "config.toml")
        with open(path, "w") as f:
            f.write(
                'control_bind_address = "0.0.0.0"\n'
                "[server.site]\n"
                'cache_max_bytes = "2GiB"\n'
            )
        out, err = io.StringIO(), io.StringIO()
        status = check(path, out, err, total_memory=self.memory(GiB))
        self.assertEqual((status, err.getvalue()), (0, ""))
        summary = summarize(load_config(path))
        text = out.getvalue()
        self.assertTrue(text.startswith(summary + "\nWarnings (3):\n  1. control site: listens on 0.0.0.0"), text)
        self.assertIn("\n  2. server.site: caches paths that look personalised", text)
        self.assertIn("\n  3. cache_max_bytes: the memory-mode servers may hold 2 GiB", text)
        self.assertTrue(text.endswith("\n"))

    def test_example_has_no_warnings(self) -> None:
        """
        The example configuration passes without warnings.
        """
        self.assertEqual(risks(load_config(EXAMPLE), self.memory()), [])
