"""
Tests for L{phantom_frame.config.network}: addresses, endpoint descriptions
and URLs are refused by the validator when the running proxy could not use
them.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import ConfigError, parse_config
from phantom_frame.config.network import check_host, check_listen, url_check
from phantom_frame.config.values import Invalid

#: Host names the standard C{idna} codec (which the origin client uses)
#: cannot encode: a label over 63 characters, an empty label, a character
#: IDNA forbids.
BAD_IDNA = ["é" * 70 + ".example", "é..example", "\ufffd.example"]


def errors(data: Dict[str, Any]) -> List[str]:
    """
    @param data: a parsed configuration file.
    @return: the errors L{parse_config} reports for it.
    """
    try:
        parse_config(data, environ={})
    except ConfigError as e:
        return e.errors
    return []


def server(**keys: Any) -> Dict[str, Any]:
    """
    @param keys: the keys of a C{[server.a]} block.
    @return: a file holding that one block.
    """
    return {"server": {"a": keys}}


class URLTests(SynchronousTestCase):
    """
    C{proxy_url} and webhook C{url}s the origin client could not use are
    configuration errors naming the key.
    """

    def test_idnaHost(self) -> None:
        """
        A C{proxy_url} whose host fails IDNA encoding is an error naming
        C{server.NAME.proxy_url} and the reason.
        """
        for host in BAD_IDNA:
            found = errors(server(proxy_url=f"http://{host}:8080/"))
            self.assertEqual(len(found), 1, (host, found))
            self.assertTrue(found[0].startswith("server.a.proxy_url: "), found)
            self.assertIn("international domain name", found[0])

    def test_webhookIdnaHost(self) -> None:
        """
        A webhook C{url} whose host fails IDNA encoding is an error naming
        its key.
        """
        hook = {"url": f"http://{BAD_IDNA[1]}/hook", "type": "notify"}
        found = errors(server(webhooks=[hook]))
        self.assertEqual(len(found), 1, found)
        self.assertTrue(found[0].startswith("server.a.webhooks[0].url: "), found)

    def test_controlCharacters(self) -> None:
        """
        NUL or any other control character anywhere in a URL is an error.
        """
        for url in ["http://exa\u0000mple/", "http://example/a\u0001b", "http://ex\u007fample/",
                    "http://example\u0085/"]:
            found = errors(server(proxy_url=url))
            self.assertEqual(len(found), 1, (url, found))
            self.assertTrue(found[0].startswith("server.a.proxy_url: "), found)
            self.assertIn("control character", found[0])
        found = errors(server(webhooks=[{"url": "http://exa\u0000mple/", "type": "notify"}]))
        self.assertEqual(len(found), 1, found)
        self.assertTrue(found[0].startswith("server.a.webhooks[0].url: "), found)

    def test_goodHosts(self) -> None:
        """
        International host names that encode, IP literals and ASCII names
        with an underscore (container names) are accepted as they are.
        """
        check = url_check("a URL", False)
        for url in ["http://bücher.example:8080/v1", "https://[::1]:8443", "http://10.0.0.1",
                    "http://my_origin:3000", "http://localhost."]:
            self.assertEqual(check(url), url)

    def test_emptyLabel(self) -> None:
        """
        An ASCII host with an empty label is refused too.
        """
        self.assertRaises(Invalid, url_check("a URL", False), "http://a..example/")


class HostTests(SynchronousTestCase):
    """
    C{bind_address} and C{control_bind_address} are addresses a socket can
    bind to.
    """

    def test_badIPv4(self) -> None:
        """
        A dotted number that is not an IPv4 address is an error naming the
        key, not a host name.
        """
        for key in ("bind_address", "control_bind_address"):
            found = errors(dict(server(), **{key: "999.999.999.999"}))
            self.assertEqual(len(found), 1, found)
            self.assertTrue(found[0].startswith(f"{key}: "), found)
        self.assertRaises(Invalid, check_host, "10.0.0.300")

    def test_goodAddresses(self) -> None:
        """
        IP addresses and host names are accepted.
        """
        for value in ["0.0.0.0", "::", "127.0.0.1", "fe80::1%lo", "localhost", "proxy-1.internal"]:
            self.assertEqual(check_host(value), value)


class ListenTests(SynchronousTestCase):
    """
    C{*_listen} descriptions are parsed with Twisted's endpoint parser, so
    that one the listener could not be made from is a configuration error.
    """

    def assertRefused(self, value: str, reason: str) -> None:
        """
        Assert that C{http_listen = value} is one error naming the key, with
        C{reason} in its message.
        """
        found = errors(dict(server(), http_listen=value))
        self.assertEqual(len(found), 1, found)
        self.assertTrue(found[0].startswith("http_listen: "), found)
        self.assertIn(reason, found[0])

    def test_notAPort(self) -> None:
        """
        A TCP port that is not a number 0-65535 is refused.
        """
        self.assertRefused("tcp:notaport", "'notaport'")
        self.assertRefused("tcp:70000", "70000")
        self.assertRefused("tcp6:port=x", "'x'")
        self.assertRefused("ssl:-1", "-1")

    def test_unknownType(self) -> None:
        """
        An endpoint type nothing provides is refused.
        """
        self.assertRefused("bogus:foo", "unknown endpoint type 'bogus'")

    def test_badArguments(self) -> None:
        """
        Arguments the endpoint type does not take or cannot convert are
        refused.
        """
        self.assertRefused("unix:/run/pf.sock:mode=99x", "mode")
        self.assertRefused("tcp:3000:colour=blue", "colour")
        self.assertRefused("tcp:3000:interface=999.999.999.999", "999.999.999.999")
        self.assertRefused("systemd:domain=INET", "index or name")
        self.assertRefused("systemd:domain=WIRELESS:index=0", "WIRELESS")
        self.assertRefused("systemd:domain=INET:index=first", "first")
        self.assertRefused("ssl:443:privateKey=/nonexistent/key.pem", "/nonexistent/key.pem")

    def test_controlCharacters(self) -> None:
        """
        A description with a control character is refused.
        """
        self.assertRaises(Invalid, check_listen, "unix:/run/pf\u0000.sock")

    def test_valid(self) -> None:
        """
        Good descriptions are accepted as they are, systemd ones without
        looking for inherited sockets.
        """
        for value in [
            "tcp:3000",
            "tcp:0:interface=127.0.0.1",
            "tcp:3000:interface=\\:\\:1:backlog=10",
            "tcp6:3000:interface=\\:\\:",
            "unix:/run/pf.sock:mode=660:lockfile=0",
            "systemd:domain=INET:index=0",
            "systemd:domain=UNIX:name=control",
        ]:
            self.assertEqual(check_listen(value), value)
