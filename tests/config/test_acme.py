"""
Tests for L{phantom_frame.config.acme}: the C{[acme]} table, what it asks
of the rest of the file, C{phantom-frame check} and the example file.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import ConfigError, load_config, parse_config
from phantom_frame.config.acme import ACME_KEYS, CHALLENGE_PATH, AcmeConfig
from phantom_frame.config.check import check
from phantom_frame.config.schema import ROOT_KEYS

from .certificates import pem_pair

EXAMPLE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "conf", "config.toml")
)


class AcmeTableTests(SynchronousTestCase):
    """
    The C{[acme]} table is read into an L{AcmeConfig}, every problem named
    by its key path.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.bundle = os.path.join(self.base, "ca.pem")
        with open(self.bundle, "wb") as f:
            f.write(pem_pair()[0])

    def table(self, **keys: Any) -> Dict[str, Any]:
        """
        @return: a valid C{[acme]} table, with C{keys} changed (a value of
            L{None} drops the key).
        """
        table: Dict[str, Any] = {
            "directory": "https://acme.example/dir",
            "email": "admin@example.com",
            "domains": ["example.com", "www.example.com"],
            "storage": "acme",
        }
        table.update(keys)
        return {k: v for k, v in table.items() if v is not None}

    def parse(self, acme: Any, environ: Any = None, **root: Any) -> Any:
        """
        @return: the configuration of a file with C{https_port}, the
            C{[acme]} table C{acme} and one server (a root key given
            L{None} is left out).
        """
        data = {"https_port": 3443, **root, "acme": acme, "server": {"site": {"proxy_url": "http://o.example"}}}
        data = {k: v for k, v in data.items() if v is not None}
        return parse_config(data, environ=environ or {}, base_dir=self.base)

    def errors(self, acme: Any, **root: Any) -> List[str]:
        """
        @return: the errors of L{parse}.
        """
        return self.assertRaises(ConfigError, self.parse, acme, **root).errors

    def test_valid(self) -> None:
        """
        A full table is kept as it is, C{storage} and C{ca_bundle} made
        absolute; with it C{https_port} needs no C{cert_path} nor
        C{key_path}.
        """
        config = self.parse(self.table(ca_bundle="ca.pem"))
        self.assertEqual(
            config.acme,
            AcmeConfig(
                directory="https://acme.example/dir",
                email="admin@example.com",
                domains=("example.com", "www.example.com"),
                storage=os.path.join(self.base, "acme"),
                ca_bundle=self.bundle,
            ),
        )
        self.assertIsNone(config.cert_path)
        self.assertIsNone(self.parse(self.table()).acme.ca_bundle)
        self.assertIsNone(parse_config({"server": {"s": {"proxy_url": "http://o.example"}}}).acme)

    def test_domainsNormalised(self) -> None:
        """
        Domains are kept lower case, international ones in their C{xn--}
        form.
        """
        config = self.parse(self.table(domains=["Example.COM", "bücher.example"]))
        self.assertEqual(config.acme.domains, ("example.com", "xn--bcher-kva.example"))

    def test_required(self) -> None:
        """
        C{directory}, C{email}, C{domains} and C{storage} are required.
        """
        acme = {"ca_bundle": "ca.pem"}
        self.assertEqual(
            self.errors(acme),
            [
                'acme.directory: required: the ACME directory URL, such as'
                ' "https://acme-v02.api.letsencrypt.org/directory"',
                "acme.email: required: the account's contact address",
                "acme.domains: required: the host names the certificate is for",
                "acme.storage: required: the directory where the account and the certificate are kept",
            ],
        )

    def test_badValues(self) -> None:
        """
        A URL that is not C{https://}, a malformed e-mail address, domains
        that HTTP-01 cannot validate, an unreadable or non-PEM C{ca_bundle}
        and an unknown key are each named.
        """
        with open(os.path.join(self.base, "notpem"), "w") as f:
            f.write("hello\n")
        errors = self.errors(
            self.table(
                directory="http://acme.example/dir",
                email="admin at example.com",
                domains=["*.example.com", "10.0.0.1", "a b", "ok.example", "OK.example", 7],
                ca_bundle="missing.pem",
                storag="x",
            )
        )
        self.assertEqual(
            errors,
            [
                "acme.directory: expected an https:// URL of an ACME directory (ACME is HTTPS only),"
                " got 'http://acme.example/dir'",
                "acme.email: expected an e-mail address such as \"admin@example.com\","
                " got 'admin at example.com'",
                "acme.domains[0]: '*.example.com' is a wildcard name cannot be validated over HTTP-01",
                "acme.domains[1]: '10.0.0.1' is an IP address, not a host name",
                "acme.domains[2]: 'a b' is not a host name (letters, digits and -, labels split by dots)",
                "acme.domains[4]: 'OK.example' is listed twice",
                "acme.domains[5]: expected a host name, got 7",
                "acme.storag: unknown key; did you mean storage?",
                f"acme.ca_bundle: cannot read {os.path.join(self.base, 'missing.pem')!r}:"
                " No such file or directory",
            ],
        )
        self.assertEqual(
            self.errors(self.table(ca_bundle="notpem", domains=[], directory="not a url")),
            [
                "acme.directory: expected an https:// URL of an ACME directory, got 'not a url'",
                'acme.domains: expected a list of host names such as ["example.com",'
                ' "www.example.com"], got []',
                f"acme.ca_bundle: no PEM certificate in {os.path.join(self.base, 'notpem')!r}",
            ],
        )

    def test_storageUnderAFile(self) -> None:
        """
        A C{storage} directory that cannot be made is an error.
        """
        self.assertEqual(
            self.errors(self.table(storage="ca.pem/acme")),
            [f"acme.storage: cannot create {self.base + '/ca.pem/acme'!r}: {self.bundle!r} is not a directory"],
        )

    def test_environment(self) -> None:
        """
        Values may come from C{$env:} references (the domains as a
        comma-separated list); the table itself may not.
        """
        environ = {"DOMAINS": "a.example, b.example", "EMAIL": "ops@example.com"}
        config = self.parse(self.table(domains="$env:DOMAINS", email="$env:EMAIL"), environ)
        self.assertEqual(config.acme.domains, ("a.example", "b.example"))
        self.assertEqual(config.acme.email, "ops@example.com")
        self.assertEqual(
            self.errors(self.table(email="$env:UNSET")),
            ["acme.email: required, but $env:UNSET is not set"],
        )
        self.assertEqual(self.errors("$env:ACME"), ["acme: [acme] is a table and cannot come from $env:"])
        self.assertEqual(self.errors(3), ["acme: expected an [acme] table, got 3"])

    def test_restOfTheFile(self) -> None:
        """
        C{[acme]} needs an HTTPS listener, replaces C{cert_path} and
        C{key_path}, and keeps the challenge path from the servers.
        """
        data = {
            "acme": self.table(),
            "cert_path": "c.pem",
            "key_path": "k.pem",
            "server": {
                "site": {"proxy_url": "http://o.example"},
                "known": {"proxy_url": "http://o.example", "bind_to": "/.well-known"},
                "clash": {"proxy_url": "http://o.example", "bind_to": CHALLENGE_PATH},
                "under": {"proxy_url": "http://o.example", "bind_to": CHALLENGE_PATH + "/x"},
            },
        }
        error = self.assertRaises(ConfigError, parse_config, data, {}, self.base)
        self.assertEqual(
            error.errors,
            [
                "acme: needs https_port or https_listen: its certificate is for the HTTPS listener",
                "cert_path: [acme] provides the certificate; give one or the other",
                "key_path: [acme] provides the certificate; give one or the other",
                "server.clash.bind_to: '/.well-known/acme-challenge' is where the proxy answers"
                " ACME challenges ([acme])",
                "server.under.bind_to: '/.well-known/acme-challenge/x' is where the proxy answers"
                " ACME challenges ([acme])",
            ],
        )
        listen = self.parse(self.table(), https_port=None, https_listen="tcp:3443")
        self.assertEqual(listen.https_port_endpoint(), "tcp:3443")


class CheckTests(SynchronousTestCase):
    """
    C{phantom-frame check} with an C{[acme]} table.
    """

    def run_check(self, text: str) -> Any:
        """
        @return: the exit status, standard output and standard error of
            C{phantom-frame check} (L{check}) on a file of C{text}.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "config.toml")
        with open(path, "w") as f:
            f.write(text)
        out, err = io.StringIO(), io.StringIO()
        return check(path, out, err), out.getvalue(), err.getvalue()

    def test_summary(self) -> None:
        """
        The summary says the HTTPS certificate comes from ACME, for which
        domains and from where.
        """
        status, out, err = self.run_check(
            'https_port = 3443\n[acme]\ndirectory = "https://acme.example/dir"\n'
            'email = "a@example.com"\ndomains = ["example.com"]\nstorage = "acme"\n'
            '[server.site]\nproxy_url = "http://127.0.0.1:8080"\n'
        )
        self.assertEqual((status, err), (0, ""))
        self.assertIn(
            "  https    tcp:3443:interface=0.0.0.0 (ACME certificate for example.com from"
            " https://acme.example/dir)\n",
            out,
        )

    def test_errors(self) -> None:
        """
        A missing C{domains} and a bad URL are numbered errors naming the
        key; the status is 1.
        """
        status, out, err = self.run_check(
            'https_port = 3443\n[acme]\ndirectory = "acme.example"\n'
            'email = "a@example.com"\nstorage = "acme"\n'
            '[server.site]\nproxy_url = "http://127.0.0.1:8080"\n'
        )
        self.assertEqual((status, out), (1, ""))
        self.assertIn("Found 2 error(s):\n", err)
        self.assertIn("  1. acme.directory: expected an https:// URL", err)
        self.assertIn("  2. acme.domains: required: the host names the certificate is for\n", err)


class ExampleTests(SynchronousTestCase):
    """
    The example C{conf/config.toml} shows the C{[acme]} table.
    """

    def test_everyKey(self) -> None:
        """
        Every C{[acme]} key is shown, commented out, after a commented
        C{[acme]} header that comes after every root key (uncommented, it
        would take the keys that follow it).
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        header = text.index("\n# [acme]\n")
        for key in ACME_KEYS:
            self.assertRegex(text[header:], rf"(?m)^# {key} = ", key)
        for key in ROOT_KEYS:
            found = re.search(rf"(?m)^#? ?{key} = ", text)
            if found is not None:
                self.assertLess(found.start(), header, key)
        self.assertNotRegex(text[header:], r"(?m)^[^#\n]")
        self.assertIsNone(load_config(EXAMPLE, environ={}).acme)

    def test_uncommented(self) -> None:
        """
        The example's C{[acme]} table, uncommented with an C{https_port},
        is valid.
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            lines = f.read().splitlines()
        table = []
        for line in lines[lines.index("# [acme]") :]:
            key = line[2:].split(" = ", 1)[0]
            if line == "# [acme]" or key in ACME_KEYS and key != "ca_bundle":
                table.append(line[2:])
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        text = "https_port = 3443\n" + "\n".join(table).replace(
            "/var/lib/phantom-frame/acme", os.path.join(directory, "acme")
        )
        text += '\n[server.site]\nproxy_url = "http://127.0.0.1:8080"\n'
        path = os.path.join(directory, "config.toml")
        with open(path, "w") as f:
            f.write(text)
        config = load_config(path, environ={})
        self.assertEqual(config.acme.domains, ("example.com", "www.example.com"))
        self.assertEqual(config.acme.directory, "https://acme-v02.api.letsencrypt.org/directory")
