"""
Tests for L{phantom_frame.ops.acme_client}: the storage directory and the
checks of a stored certificate. The protocol steps are tested against a
real Pebble in L{tests.ops.test_acme_pebble}.
"""

from __future__ import annotations

import os

from acme import messages
from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.ops.acme_client import Problem, Storage, certificate_problem, leaf, not_after

from .support_acme import DAY, NOW, certificate, serial


class StorageTests(SynchronousTestCase):
    """
    L{Storage} keeps the account and the certificate, readable by their
    owner only.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.storage = Storage(self.directory)

    def mode(self, path: str) -> int:
        """
        @return: the permission bits of C{path}.
        """
        return os.stat(path).st_mode & 0o777

    def test_create(self) -> None:
        """
        A missing directory is made C{0700}; an existing one is left as it
        is.
        """
        self.storage.create()
        self.assertEqual(self.mode(self.directory), 0o700)
        os.chmod(self.directory, 0o750)
        self.storage.create()
        self.assertEqual(self.mode(self.directory), 0o750)

    def test_certificate(self) -> None:
        """
        There is no certificate until one is saved, chain and key both;
        the files are C{0600} and nothing is left half written.
        """
        self.storage.create()
        self.assertIsNone(self.storage.certificate())
        pems = certificate(["example.com"])
        self.storage.save_certificate(*pems)
        self.assertEqual(self.storage.certificate(), pems)
        self.assertEqual(self.mode(self.storage.cert_path), 0o600)
        self.assertEqual(self.mode(self.storage.key_path), 0o600)
        self.assertEqual(sorted(os.listdir(self.directory)), ["fullchain.pem", "privkey.pem"])
        os.remove(self.storage.key_path)
        self.assertIsNone(self.storage.certificate())

    def test_accountKey(self) -> None:
        """
        The account key is made the first time, then read back.
        """
        self.storage.create()
        first = self.storage.account_key()
        self.assertEqual(self.storage.account_key(), first)
        self.assertEqual(self.mode(os.path.join(self.directory, "account-key.pem")), 0o600)

    def test_account(self) -> None:
        """
        The account is kept for the directory it was registered with; none
        is returned for another directory, or when the file is damaged.
        """
        self.storage.create()
        self.assertIsNone(self.storage.account("https://a.example/dir"))
        account = messages.RegistrationResource(
            uri="https://a.example/acct/1",
            body=messages.Registration.from_data(email="admin@example.com"),
        )
        self.storage.save_account("https://a.example/dir", account)
        kept = self.storage.account("https://a.example/dir")
        self.assertEqual(kept.uri, "https://a.example/acct/1")
        self.assertEqual(kept.body.emails, ("admin@example.com",))
        self.assertIsNone(self.storage.account("https://b.example/dir"))
        with open(os.path.join(self.directory, "account.json"), "w") as f:
            f.write("{")
        self.assertIsNone(self.storage.account("https://a.example/dir"))


class ProblemTests(SynchronousTestCase):
    """
    L{certificate_problem} says why a stored certificate cannot be served
    as it is.
    """

    def test_usable(self) -> None:
        """
        A matching pair covering the domains (in any case) with more than
        30 days left has no problem.
        """
        chain, key = certificate(["Example.com", "www.example.com"], end=NOW + 31 * DAY)
        self.assertIsNone(certificate_problem(chain, key, ["example.com", "www.example.com"], NOW))
        self.assertEqual(not_after(leaf(chain)), NOW + 31 * DAY)
        self.assertEqual(leaf(chain).serial_number, serial(chain))

    def test_problems(self) -> None:
        """
        Broken files, a key of another certificate, a missing domain, a
        certificate not valid yet, expired, or with 30 days or less left
        (which alone may be served meanwhile).
        """
        chain, key = certificate(["example.com"], end=NOW + 30 * DAY)
        _, other = certificate(["example.com"])
        domains = ["example.com"]
        self.assertEqual(
            certificate_problem(b"junk", key, domains, NOW),
            Problem("no PEM certificate in the stored certificate"),
        )
        self.assertEqual(
            certificate_problem(chain, b"junk", domains, NOW),
            Problem("no usable PEM private key in the stored key"),
        )
        self.assertEqual(
            certificate_problem(chain, other, domains, NOW),
            Problem("the key in the stored key does not match the certificate in the stored certificate"),
        )
        self.assertEqual(
            certificate_problem(chain, key, ["example.com", "api.example.com"], NOW),
            Problem("it does not cover api.example.com"),
        )
        self.assertEqual(
            certificate_problem(chain, key, domains, NOW - 2 * DAY), Problem("it is not valid yet")
        )
        self.assertEqual(
            certificate_problem(chain, key, domains, NOW + 30 * DAY),
            Problem("it expired on 2030-01-31 00:00 UTC"),
        )
        self.assertEqual(
            certificate_problem(chain, key, domains, NOW),
            Problem("it expires on 2030-01-31 00:00 UTC, within 30 days", servable=True),
        )
        self.assertIsNone(certificate_problem(chain, key, domains, NOW - 1))
