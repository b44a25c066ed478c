"""
The C{phantom-frame} command end to end: C{run} (and a bare FILE) as a real
process, and C{purge}, C{stats}, C{top} and C{warm} run as processes against
a real C{twistd -n phantom-frame} child.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, List, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from phantom_frame.cli import UsageError, main, twistd_arguments

from .origin import PAGE, Origin
from .test_plugin import ROOT, Twistd, spawn_twistd

TOKEN = "cli-token"

#: Two servers on loopback ports the system picks, behind a token: a
#: dynamic one at C{"*"} and a pre_generate one at C{/docs}.
CONFIG = """
http_listen = "tcp:0:interface=127.0.0.1"
control_listen = "tcp:0:interface=127.0.0.1"
control_auth = "{token}"
shutdown_grace = 2

[server.site]
bind_to = "*"
proxy_url = "http://127.0.0.1:{origin}"

[server.docs]
bind_to = "/docs"
proxy_url = "http://127.0.0.1:{origin}"
proxy_mode = "pre_generate"
pre_generate_paths = ["/page/1", "/page/2", "/status/500"]
"""


async def cli(*args: str) -> Tuple[int, str, str]:
    """
    Run C{python -m phantom_frame.cli ARGS} as a process.

    @return: its exit status, standard output and standard error.
    """
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "phantom_frame.cli", *args],
        env=dict(os.environ, PYTHONPATH=ROOT),
        path=ROOT,
        reactor=reactor,
    )
    return code, out.decode(), err.decode()


class ControlCommandTests(TestCase):
    """
    The control commands against a running proxy.
    """

    timeout = 90

    def start_origin(self) -> Tuple[Origin, int]:
        """
        @return: an origin listening on loopback, and its port.
        """
        origin = Origin()
        port = reactor.listenTCP(0, Site(origin), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return origin, port.getHost().port

    async def get(self, port: int, path: str) -> Any:
        """
        @return: the response to C{GET path} on the proxy, its body read.
        """
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await Agent(reactor, pool=pool).request(b"GET", b"http://127.0.0.1:%d%s" % (port, path.encode()))
        await treq.content(response)
        return response

    async def test_commands(self) -> None:
        """
        C{stats} shows the traffic as a table (and as the control site's
        JSON), C{top --once} one frame with the busiest key, C{purge} drops
        entries and says how many, C{warm} refreshes the snapshots and
        reports the failures; a wrong token and an unreachable control site
        are one-line errors with status 1.
        """
        origin, origin_port = self.start_origin()
        child = spawn_twistd(self, CONFIG.format(token=TOKEN, origin=origin_port))
        http, control = await child.ports()
        common = ["--config", child.config, "--control", f"127.0.0.1:{control}"]
        for _ in range(3):
            response = await self.get(http, "/hot")
        self.assertEqual(response.headers.getRawHeaders(b"cache-status"), [b"phantom-frame; hit"])
        await self.get(http, "/cold")

        code, out, err = await cli("stats", *common)
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["SERVER", "ENTRIES", "BYTES", "HITS", "MISSES", "HIT", "RATIO", "STALE", "EVICTIONS"])
        site = [line.split() for line in lines if line.startswith("site ")][0]
        self.assertEqual(site[1], "2")
        self.assertEqual((site[4], site[5], site[6]), ("2", "2", "50.0%"))
        self.assertEqual(len({len(line) for line in lines}), 1, "aligned columns")

        code, out, err = await cli("stats", "--json", *common)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["servers"]["site"]["hits"], 2)

        code, out, err = await cli("top", "--once", "--interval", "0.2", *common)
        self.assertEqual(code, 0, err)
        self.assertNotIn("\x1b[", out)
        self.assertIn("phantom-frame top  127.0.0.1:%d" % control, out)
        self.assertEqual(out.splitlines()[2].split()[:3], ["SERVER", "REQ/S", "HIT"])
        [row] = [line.split() for line in out.splitlines() if line.startswith("site ")]
        self.assertEqual(row[3], "50.0%")
        keys = out[out.index("Busiest keys:") :]
        self.assertIn("/hot ", keys)
        self.assertNotIn("/cold", keys)

        code, out, err = await cli("purge", *common, "/hot")
        self.assertEqual((code, out, err), (0, "/hot: dropped 1 entry\n", ""))
        code, out, err = await cli("purge", *common, "--server", "site", "/cold", "/nothing/*")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.splitlines(), ["/cold: dropped 1 entry", "/nothing/*: dropped 0 entries", "dropped 1 entry for 2 patterns"])
        self.assertEqual((await self.get(http, "/hot")).headers.getRawHeaders(b"cache-status")[0][:28], b"phantom-frame; fwd=uri-miss;")

        before = origin.hits["/page/1"]
        code, out, err = await cli("warm", *common, "docs")
        self.assertEqual(code, 1, out + err)
        self.assertEqual(out.splitlines()[0], "refreshed 2/3 snapshots, 1 failed")
        self.assertIn("  docs /status/500: ", out)
        self.assertEqual(origin.hits["/page/1"], before + 1)

        wrong = os.path.abspath(self.mktemp())
        with open(wrong, "w") as f:
            f.write(CONFIG.format(token="wrong", origin=origin_port))
        code, out, err = await cli("stats", "--config", wrong, "--control", f"127.0.0.1:{control}")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, f"phantom-frame: the control site at 127.0.0.1:{control} refused the token (401): check control_auth\n")
        code, out, err = await cli("purge", "--config", child.config, "--control", "unix:" + os.path.abspath("nowhere.sock"), "/x")
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith("phantom-frame: cannot reach the control site at unix:"), err)
        self.assertEqual(len(err.splitlines()), 1)

        os.kill(child.transport.pid, signal.SIGTERM)
        self.assertEqual(await child.ended, 0, child.text())


def spawn_cli(testcase: TestCase, *args: str) -> Twistd:
    """
    Run C{python -m phantom_frame.cli ARGS} as a process that reports its
    ports as twistd does; it is killed at the end of the test if it still
    runs.
    """
    child = Twistd()
    reactor.spawnProcess(
        child,
        sys.executable,
        [sys.executable, "-m", "phantom_frame.cli", *args],
        env=dict(os.environ, PYTHONPATH=ROOT),
        path=ROOT,
    )

    def kill() -> Any:
        if not child.ended.called:
            child.transport.signalProcess("KILL")
        return child.ended

    testcase.addCleanup(kill)
    return child


class RunTests(TestCase):
    """
    C{phantom-frame FILE} and C{phantom-frame run FILE} run the proxy in the
    foreground, as C{twistd -n phantom-frame --config FILE}.
    """

    timeout = 60

    def config(self, origin: int) -> str:
        """
        @return: the path of a configuration in front of C{origin}.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(CONFIG.format(token=TOKEN, origin=origin).split("[server.docs]")[0])
        return path

    async def serves_and_stops(self, child: Twistd, origin: Origin) -> None:
        """
        Check that C{child} proxies to C{origin} and exits 0 on SIGTERM.
        """
        http, control = await child.ports()
        self.assertNotEqual(http, control)
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await Agent(reactor, pool=pool).request(b"GET", b"http://127.0.0.1:%d/page" % http)
        body = await treq.content(response)
        self.assertEqual(response.code, 200)
        self.assertTrue(body.startswith(PAGE))
        self.assertEqual(len(response.headers.getRawHeaders(b"x-request-id")), 1)
        os.kill(child.transport.pid, signal.SIGTERM)
        self.assertEqual(await child.ended, 0, child.text())

    def origin(self) -> Tuple[Origin, int]:
        """
        @return: an origin on loopback and its port.
        """
        origin = Origin()
        port = reactor.listenTCP(0, Site(origin), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return origin, port.getHost().port

    async def test_bareFile(self) -> None:
        """
        C{phantom-frame FILE --pidfile=} serves and exits 0 on SIGTERM.
        """
        origin, port = self.origin()
        child = spawn_cli(self, self.config(port), "--pidfile=")
        await self.serves_and_stops(child, origin)

    async def test_run(self) -> None:
        """
        C{phantom-frame run --pidfile PATH FILE} passes twistd's options on:
        the pid file names the process while it runs.
        """
        origin, port = self.origin()
        pidfile = os.path.abspath(self.mktemp())
        child = spawn_cli(self, "run", "--pidfile", pidfile, self.config(port))
        await child.ports()
        with open(pidfile) as f:
            self.assertEqual(int(f.read()), child.transport.pid)
        await self.serves_and_stops(child, origin)

    async def test_invalid(self) -> None:
        """
        An invalid configuration stops C{run} with status 1 naming the key,
        as under twistd.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('http_port = "x"\n[server.a]\n')
        child = spawn_cli(self, "run", "--pidfile=", path)
        self.assertEqual(await child.ended, 1)
        self.assertIn("http_port", child.text())
        self.assertNotIn("Traceback", child.text())


class ArgumentTests(SynchronousTestCase):
    """
    The command line, in process.
    """

    def test_twistdArguments(self) -> None:
        """
        twistd's options pass through in any order, with their values;
        FILE (or C{--config FILE}) becomes the plugin's C{--config}.
        """
        self.assertEqual(
            twistd_arguments(["--logfile", "pf.log", "-p", "prof", "--pidfile=pf.pid", "--syslog", "conf.toml"]),
            ["--nodaemon", "--logfile", "pf.log", "-p", "prof", "--pidfile=pf.pid", "--syslog", "phantom-frame", "--config", "conf.toml"],
        )
        self.assertEqual(
            twistd_arguments(["--config", "a.toml", "-l", "x.log"]),
            ["--nodaemon", "-l", "x.log", "phantom-frame", "--config", "a.toml"],
        )
        for wrong in ([], ["a.toml", "b.toml"], ["--bogus", "a.toml"], ["a.toml", "--logfile"], ["-Z", "a.toml"]):
            self.assertRaises(UsageError, twistd_arguments, wrong)

    def run_main(self, argv: List[str]) -> Tuple[int, str, str]:
        """
        @return: the exit status and output of L{main}.
        """
        import io

        out, err = io.StringIO(), io.StringIO()
        return main(argv, stdout=out, stderr=err), out.getvalue(), err.getvalue()

    def test_usageErrors(self) -> None:
        """
        Bad command lines exit 2 with the usage; an unknown word is an
        unknown command, not a file.
        """
        for argv, message in (
            (["purge"], "purge: the following arguments are required: PATTERN"),
            (["stats", "--bogus"], "stats: unrecognized arguments: --bogus"),
            (["top", "--interval", "0"], "top: --interval must be above 0"),
            (["run"], "run: the configuration FILE is missing"),
            (["frobnicate"], "unknown command 'frobnicate'"),
        ):
            code, out, err = self.run_main(argv)
            self.assertEqual((code, out), (2, ""), argv)
            self.assertIn(f"phantom-frame: {message}", err)
            self.assertIn("Usage: phantom-frame check FILE", err)

    def test_help(self) -> None:
        """
        C{--help}, and C{COMMAND --help}, print the usage, which names every
        command.
        """
        for argv in (["--help"], ["top", "--help"], ["run", "-h"]):
            code, out, err = self.run_main(argv)
            self.assertEqual((code, err), (0, ""))
            for command in ("check", "run", "purge", "stats", "top", "warm"):
                self.assertIn(f"phantom-frame {command}" if command != "run" else "[run]", out)

    def test_badConfig(self) -> None:
        """
        A control command whose configuration cannot be read is one line,
        status 1.
        """
        missing = os.path.abspath(self.mktemp())
        code, out, err = self.run_main(["stats", "--config", missing])
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, f"phantom-frame: {missing}: cannot read the file: No such file or directory\n")
