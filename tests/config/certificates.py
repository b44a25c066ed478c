"""
Certificates and keys for the configuration tests, made at test time.
"""

from __future__ import annotations

import datetime
import os
from typing import Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def pem_pair() -> Tuple[bytes, bytes]:
    """
    @return: a fresh self-signed certificate for C{localhost} and its
        private key, both PEM (an EC key: quick to make).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_pair(directory: str, cert: str = "cert.pem", key: str = "key.pem") -> Tuple[str, str]:
    """
    Write a fresh certificate and its key into a directory.

    @param directory: an existing directory.
    @param cert: the certificate's file name.
    @param key: the key's file name.
    @return: the absolute paths of the certificate and the key.
    """
    paths = []
    for name, data in zip((cert, key), pem_pair()):
        path = os.path.abspath(os.path.join(directory, name))
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths[0], paths[1]
