"""
Certificates for the ACME tests, made at test time, valid over chosen
spans of a test clock, and an issuer whose attempts the test answers.
"""

from __future__ import annotations

import datetime
from typing import List, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred, succeed

#: A test clock's start: 2030-01-01 00:00 UTC.
NOW = 1893456000.0

DAY = 86400.0


def certificate(
    domains: Sequence[str], start: float = NOW - DAY, end: float = NOW + 90 * DAY
) -> Tuple[bytes, bytes]:
    """
    @param domains: its DNS names.
    @param start: when it becomes valid, in POSIX seconds.
    @param end: when it expires, in POSIX seconds.
    @return: a self-signed certificate and its key, both PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0] if domains else "none")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(start, datetime.timezone.utc))
        .not_valid_after(datetime.datetime.fromtimestamp(end, datetime.timezone.utc))
    )
    if domains:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
        )
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def serial(chain_pem: bytes) -> int:
    """
    @return: the serial number of the chain's first certificate.
    """
    return x509.load_pem_x509_certificate(chain_pem).serial_number


class FakeIssuer:
    """
    An issuer whose attempts the test answers.

    @ivar attempts: the L{Deferred} of each C{obtain()}, in order.
    @ivar stopped: whether C{stop()} was called.
    """

    def __init__(self) -> None:
        self.attempts: List[Deferred] = []
        self.stopped = False

    def obtain(self) -> Deferred:
        """
        @return: a new attempt's L{Deferred}, kept in L{attempts}.
        """
        d: Deferred = Deferred()
        self.attempts.append(d)
        return d

    def stop(self) -> Deferred:
        """
        @return: a fired L{Deferred}; L{stopped} is set.
        """
        self.stopped = True
        return succeed(None)
