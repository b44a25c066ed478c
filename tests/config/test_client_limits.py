"""
Tests for the root keys that limit clients: C{max_request_body},
C{max_header_bytes}, C{client_header_timeout} and C{allowed_hosts}.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import Config, ConfigError, parse_config
from phantom_frame.cli import main
from phantom_frame.http.limits import DEFAULT_LIMITS, ClientLimits

SERVER = {"server": {"site": {"proxy_url": "http://127.0.0.1:8080"}}}


def parse(environ: Dict[str, str] = {}, **root: Any) -> Config:
    """
    @return: the configuration of a file with C{root} keys and one server.
    """
    return parse_config(dict(root, **SERVER), environ=environ)


def errors(**root: Any) -> List[str]:
    """
    @return: the errors of a file with C{root} keys and one server.
    """
    try:
        parse(**root)
    except ConfigError as e:
        return e.errors
    raise AssertionError("no error")


class ClientLimitKeysTests(SynchronousTestCase):
    """
    The keys are read, checked, and make the site's L{ClientLimits}.
    """

    def test_defaults(self) -> None:
        """
        Left out, the keys give the defaults: 64 MB of body, 16 KB of head,
        30 seconds, any host.
        """
        config = parse()
        self.assertEqual(config.client_limits(), DEFAULT_LIMITS)
        self.assertEqual(
            (DEFAULT_LIMITS.max_request_body, DEFAULT_LIMITS.max_header_bytes,
             DEFAULT_LIMITS.client_header_timeout, DEFAULT_LIMITS.allowed_hosts),
            (64_000_000, 16_000, 30.0, ()),
        )

    def test_values(self) -> None:
        """
        Sizes with units, seconds and host globs are read into the site's
        limits.
        """
        config = parse(
            max_request_body="1MiB", max_header_bytes=8192, client_header_timeout=2.5,
            allowed_hosts=["example.com", "*.Example.com"],
        )
        self.assertEqual(
            config.client_limits(),
            ClientLimits(1024 * 1024, 8192, 2.5, ("example.com", "*.Example.com")),
        )
        self.assertTrue(config.client_limits().host_allowed("www.example.com"))

    def test_environment(self) -> None:
        """
        The keys may come from C{$env:} references, lists comma-separated.
        """
        environ = {"BODY": "2MB", "HEAD": "4KB", "WAIT": "7", "HOSTS": "a.example, *.b.example"}
        config = parse(
            environ, max_request_body="$env:BODY", max_header_bytes="$env:HEAD",
            client_header_timeout="$env:WAIT", allowed_hosts="$env:HOSTS",
        )
        self.assertEqual(config.client_limits(), ClientLimits(2_000_000, 4000, 7.0, ("a.example", "*.b.example")))

    def test_invalid(self) -> None:
        """
        Bad values are errors naming the key path and the expected form.
        """
        self.assertEqual(
            errors(max_request_body="lots", max_header_bytes=100, client_header_timeout=0),
            [
                "max_request_body: expected a size in bytes: an integer >= 0 or a string such as"
                ' "256MiB", "8 MB" or "512k", got \'lots\'',
                "max_header_bytes: expected a size of at least 1024 bytes, got 100",
                "client_header_timeout: expected a number of seconds > 0, got 0",
            ],
        )
        found = errors(allowed_hosts=["example.com", "bad host", "example.com:80", 3])
        self.assertEqual([e.split(":")[0] for e in found], ["allowed_hosts[1]", "allowed_hosts[2]", "allowed_hosts[3]"])
        self.assertIn('a host glob such as "*.example.com"', found[0])
        self.assertEqual(len(errors(allowed_hosts="example.com")), 1)

    def test_rootOnly(self) -> None:
        """
        In a server block, the keys are errors that say where they belong.
        """
        data = {"server": {"site": {"proxy_url": "http://127.0.0.1:8080", "allowed_hosts": []}}}
        error = self.assertRaises(ConfigError, parse_config, data, environ={})
        self.assertEqual(len(error.errors), 1)
        self.assertIn("server.site.allowed_hosts", error.errors[0])
        self.assertIn("root key", error.errors[0])


class CheckTests(SynchronousTestCase):
    """
    C{phantom-frame check} accepts and refuses the same values.
    """

    def check(self, text: str) -> tuple:
        """
        @return: the exit status and standard error of checking C{text}.
        """
        path = os.path.join(self.mktemp())
        with open(path, "w") as f:
            f.write(text + '\n[server.site]\nproxy_url = "http://127.0.0.1:8080"\n')
        out, err = io.StringIO(), io.StringIO()
        return main(["check", path], stdout=out, stderr=err), err.getvalue()

    def test_check(self) -> None:
        """
        Valid values pass the check; invalid ones fail it, named.
        """
        good = 'max_request_body = "10MB"\nmax_header_bytes = "8KiB"\nclient_header_timeout = 5\nallowed_hosts = ["*.example.com"]'
        self.assertEqual(self.check(good), (0, ""))
        status, err = self.check('max_header_bytes = "1KB"\nallowed_hosts = ["a b"]')
        self.assertEqual(status, 1)
        self.assertIn("max_header_bytes: expected a size of at least 1024 bytes", err)
        self.assertIn("allowed_hosts[0]: expected a host glob", err)
