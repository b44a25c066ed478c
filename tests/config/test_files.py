"""
Tests for L{phantom_frame.config.files}: the certificate, key and cache
directory a configuration names are checked as the running proxy uses
them, so that C{phantom-frame check} refuses what twistd would.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, List

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame import tap
from phantom_frame.config import ConfigError, parse_config
from phantom_frame.cli import main
from phantom_frame.config.files import directory_problem

from .certificates import write_pair


class _Files(SynchronousTestCase):
    """
    Writing files and checking configurations that name them.
    """

    def directory(self) -> str:
        """
        @return: a fresh, empty, absolute directory.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def errors(self, data: Dict[str, Any]) -> List[str]:
        """
        @return: the errors L{parse_config} reports for C{data}.
        """
        try:
            parse_config(data, environ={})
        except ConfigError as e:
            return e.errors
        return []


class TLSTests(_Files):
    """
    C{cert_path} and C{key_path} must load as the HTTPS listener loads them.
    """

    def https(self, cert: str, key: str) -> Dict[str, Any]:
        """
        @return: a file with an HTTPS listener on C{cert} and C{key}.
        """
        return {"https_port": 8443, "cert_path": cert, "key_path": key, "server": {"a": {}}}

    def test_valid(self) -> None:
        """
        A certificate and its own key are accepted.
        """
        cert, key = write_pair(self.directory())
        self.assertEqual(self.errors(self.https(cert, key)), [])

    def test_notPEM(self) -> None:
        """
        A certificate file that holds no PEM certificate, or a key file that
        holds no PEM key, is an error naming that key and the file.
        """
        directory = self.directory()
        cert, key = write_pair(directory)
        junk = os.path.join(directory, "junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        self.assertEqual(
            self.errors(self.https(junk, key)), [f"cert_path: no PEM certificate in {junk}"]
        )
        self.assertEqual(
            self.errors(self.https(cert, junk)),
            [f"key_path: no usable PEM private key in {junk}"],
        )

    def test_mismatch(self) -> None:
        """
        A key that belongs to another certificate is an error naming
        C{key_path} and both files.
        """
        cert, _ = write_pair(self.directory())
        _, other = write_pair(self.directory())
        self.assertEqual(
            self.errors(self.https(cert, other)),
            [f"key_path: the key in {other} does not match the certificate in {cert}"],
        )

    def test_checkNumbersIt(self) -> None:
        """
        C{phantom-frame check} prints a TLS problem numbered among the other
        errors and exits 1; twistd refuses the same file with the same
        message.
        """
        directory = self.directory()
        cert, _ = write_pair(directory)
        _, other = write_pair(self.directory())
        path = os.path.join(directory, "config.toml")
        with open(path, "w") as f:
            f.write(
                f'https_port = 8443\ncert_path = "{cert}"\nkey_path = "{other}"\n'
                '[server.a]\ncache_stratgy = "all"\n'
            )
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["check", path], stdout=out, stderr=err), 1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(
            err.getvalue().splitlines(),
            [
                "Found 2 error(s):",
                f"  1. key_path: the key in {other} does not match the certificate in {cert}",
                "  2. server.a.cache_stratgy: unknown key; did you mean cache_strategy?",
            ],
        )
        error = self.assertRaises(UsageError, tap.Options().parseOptions, ["--config", path])
        self.assertIn("key_path: the key in", str(error))


class CacheDirectoryTests(_Files):
    """
    A filesystem C{cache_directory} must be a directory, or creatable.
    """

    def filesystem(self, directory: str) -> Dict[str, Any]:
        """
        @return: a file with one filesystem-mode server using C{directory}.
        """
        server = {"cache_storage_mode": "filesystem", "cache_directory": directory}
        return {"server": {"a": server}}

    def test_underAFile(self) -> None:
        """
        A C{cache_directory} whose parent is a regular file is an error
        naming the key and the file.
        """
        regular = os.path.join(self.directory(), "file")
        with open(regular, "w") as f:
            f.write("x")
        target = os.path.join(regular, "cache")
        self.assertEqual(
            self.errors(self.filesystem(target)),
            [
                f"server.a.cache_directory: cannot create {target!r}:"
                f" {regular!r} is not a directory"
            ],
        )
        self.assertEqual(
            self.errors(self.filesystem(regular)),
            [f"server.a.cache_directory: {regular!r} exists and is not a directory"],
        )

    def test_creatable(self) -> None:
        """
        An existing directory, or a missing one under a directory, is
        accepted; a memory-mode server does not use the key.
        """
        base = self.directory()
        self.assertEqual(self.errors(self.filesystem(base)), [])
        self.assertEqual(self.errors(self.filesystem(os.path.join(base, "a", "b"))), [])
        regular = os.path.join(base, "file")
        with open(regular, "w") as f:
            f.write("x")
        memory = {"server": {"a": {"cache_directory": os.path.join(regular, "cache")}}}
        self.assertEqual(self.errors(memory), [])
        self.assertIsNone(directory_problem("/"))
