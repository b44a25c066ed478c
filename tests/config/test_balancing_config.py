"""
Tests for C{upstreams}, C{load_balancing} and C{[server.NAME.health_check]}
(L{phantom_frame.config.upstreams}): each error names its key path, in
L{parse_config} and in C{phantom-frame check}.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cli import main
from phantom_frame.config import ConfigError, load_config, parse_config
from phantom_frame.proxy.health import HealthCheck
from phantom_frame.proxy.upstreams import Balancing

EXAMPLE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "conf", "config.toml")
)

_FILE = """\
http_port = 3000

[server.api]
upstreams = ["http://10.0.0.1:8080", "http://10.0.0.2:8080/base"]
load_balancing = "least_conn"

[server.api.health_check]
path = "/healthz"
interval = 5
timeout = 1.5
unhealthy_after = 2
healthy_after = 4
"""


def _server(**keys: Any) -> Dict[str, Any]:
    """
    @return: parsed TOML with one server C{api} with C{keys}.
    """
    return {"server": {"api": keys}}


class BalancingConfigTests(SynchronousTestCase):
    """
    The keys become the server's settings, or errors naming them.
    """

    def errors(self, data: Dict[str, Any], environ: Optional[Dict[str, str]] = None) -> List[str]:
        """
        @return: the errors for C{data}.
        """
        error = self.assertRaises(ConfigError, parse_config, data, environ or {}, ".")
        return error.errors

    def test_file(self) -> None:
        """
        A file's keys give the upstreams, the policy and the health check.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_FILE)
        proxy = load_config(path, {}).servers[0].proxy
        self.assertEqual(proxy.upstreams, ("http://10.0.0.1:8080", "http://10.0.0.2:8080/base"))
        self.assertIs(proxy.load_balancing, Balancing.LEAST_CONN)
        self.assertEqual(proxy.health_check, HealthCheck("/healthz", 5.0, 1.5, 2, 4))

    def test_defaults(self) -> None:
        """
        No upstreams, C{round_robin}, no health check; a health check's
        keys all have defaults.
        """
        proxy = parse_config(_server(proxy_url="http://127.0.0.1:8080"), {}, ".").servers[0].proxy
        self.assertEqual((proxy.upstreams, proxy.load_balancing, proxy.health_check), ((), Balancing.ROUND_ROBIN, None))
        proxy = parse_config(_server(upstreams=["http://a:1"], health_check={}), {}, ".").servers[0].proxy
        self.assertEqual(proxy.health_check, HealthCheck("/", 10.0, 2.0, 3, 2))

    def test_fromEnvironment(self) -> None:
        """
        C{upstreams} may come from a comma-separated variable, the others
        from variables of their type.
        """
        data = _server(
            upstreams="$env:UP",
            load_balancing="$env:LB",
            health_check={"interval": "$env:EVERY", "healthy_after": "$env:AFTER"},
        )
        environ = {"UP": "http://a:1, http://b:2", "LB": "ip_hash", "EVERY": "2.5", "AFTER": "3"}
        proxy = parse_config(data, environ, ".").servers[0].proxy
        self.assertEqual(proxy.upstreams, ("http://a:1", "http://b:2"))
        self.assertIs(proxy.load_balancing, Balancing.IP_HASH)
        self.assertEqual((proxy.health_check.interval, proxy.health_check.healthy_after), (2.5, 3))

    def test_bothOrigins(self) -> None:
        """
        C{upstreams} and C{proxy_url} together are an error.
        """
        self.assertEqual(
            self.errors(_server(proxy_url="http://a:1", upstreams=["http://b:1"])),
            ["server.api.upstreams: replaces proxy_url; give only one of the two"],
        )

    def test_badValues(self) -> None:
        """
        Each bad value is reported under its key path.
        """
        errors = self.errors(
            _server(
                upstreams=["ftp://a", "http://b:1", "http://b:1"],
                load_balancing="fastest",
                health_check={"path": "healthz", "interval": 0, "timeout": -1, "unhealthy_after": 0, "pth": "/"},
            )
        )
        self.assertEqual(
            errors,
            [
                "server.api.upstreams[0]: expected an http:// or https:// URL with a host, got 'ftp://a'",
                "server.api.upstreams[2]: 'http://b:1' is already upstreams[1]",
                "server.api.load_balancing: expected one of round_robin, random, least_conn, ip_hash,"
                " got 'fastest'",
                "server.api.health_check.path: expected a path starting with \"/\", got 'healthz'",
                "server.api.health_check.interval: expected a number of seconds > 0, got 0",
                "server.api.health_check.timeout: expected a number of seconds > 0, got -1",
                "server.api.health_check.unhealthy_after: expected an integer > 0, got 0",
                "server.api.health_check.pth: unknown key; did you mean path?",
            ],
        )

    def test_emptyAndNotTables(self) -> None:
        """
        C{upstreams} is a non-empty list; C{health_check} a table.
        """
        self.assertEqual(
            self.errors(_server(upstreams=[], health_check="/healthz")),
            [
                'server.api.upstreams: expected a non-empty list of origin URLs ("http://10.0.0.1:8080"),'
                " got []",
                "server.api.health_check: expected a [server.NAME.health_check] table, got '/healthz'",
            ],
        )

    def test_check(self) -> None:
        """
        C{phantom-frame check} names a bad policy and both origins, and
        exits 1.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_FILE.replace('"least_conn"', '"fastest"\nproxy_url = "http://10.0.0.3:8080"'))
        out, err = io.StringIO(), io.StringIO()
        status = main(["check", path], stdout=out, stderr=err)
        self.assertEqual((status, out.getvalue()), (1, ""))
        self.assertIn("server.api.load_balancing: expected one of round_robin", err.getvalue())
        self.assertIn("server.api.upstreams: replaces proxy_url", err.getvalue())

    def test_example(self) -> None:
        """
        The example file shows C{upstreams}, C{load_balancing} and a
        C{health_check} table with every one of its keys, commented out.
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("# [server.site.health_check]\n", text)
        for key in ("upstreams", "load_balancing", "path", "interval", "timeout", "unhealthy_after", "healthy_after"):
            self.assertRegex(text, rf"(?m)^# {key} = ", key)
