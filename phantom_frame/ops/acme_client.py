"""
The blocking half of ACME (RFC 8555): the storage directory (the account
key and registration, the certificate chain and its key), the checks of a
stored certificate, and the protocol's steps, spoken with certbot's C{acme}
library.

Every function and method here that touches the disk or the network
blocks: L{phantom_frame.ops.acme} runs them in a thread pool of its own,
never on the reactor thread. Their deadlines are in real seconds
(C{time.monotonic}), since the thread waits on the ACME server, not on the
reactor.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from typing import Any, List, Optional, Sequence, Tuple

import attr
import josepy as jose
from acme import challenges, crypto_util, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from phantom_frame._version import __version__
from phantom_frame.config.acme import AcmeConfig
from phantom_frame.http.tls import TLSConfigError, server_context

__all__ = [
    "AcmeError",
    "Pending",
    "Problem",
    "RENEW_BEFORE",
    "Stopped",
    "Storage",
    "certificate_problem",
    "connect",
    "finish",
    "leaf",
    "new_order",
    "not_after",
]

#: Seconds before its expiry a certificate is renewed: 30 days.
RENEW_BEFORE = 30 * 86400.0

#: How long the ACME server may take to validate and to issue.
_DEADLINE = 120.0

#: Seconds each request to the ACME server may take.
_TIMEOUT = 30


class AcmeError(Exception):
    """
    The ACME server did not issue the certificate; the message says why.
    """


class Stopped(Exception):
    """
    The service stopped while a certificate was being obtained.
    """


def _write(path: str, data: bytes) -> None:
    """
    Replace a file in one step, readable by its owner only.

    @param path: the file.
    @param data: its new contents.
    """
    temporary = f"{path}.new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _read(path: str) -> Optional[bytes]:
    """
    @return: the file's contents, or L{None} when it does not exist.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Storage:
    """
    The C{storage} directory: C{account-key.pem} and C{account.json} (the
    account, registered once), C{fullchain.pem} and C{privkey.pem} (the
    certificate chain and its key). Files are written whole, in one step,
    readable by their owner only.

    @ivar directory: the directory.
    @ivar cert_path: the certificate chain's file.
    @ivar key_path: its key's file.
    """

    def __init__(self, directory: str) -> None:
        """
        @param directory: see L{directory}.
        """
        self.directory = directory
        self.cert_path = os.path.join(directory, "fullchain.pem")
        self.key_path = os.path.join(directory, "privkey.pem")
        self._account_key = os.path.join(directory, "account-key.pem")
        self._account = os.path.join(directory, "account.json")

    def create(self) -> None:
        """
        Make the directory, C{0700}, when it is missing (an existing one is
        left as it is).

        @raise OSError: when it cannot be made.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def certificate(self) -> Optional[Tuple[bytes, bytes]]:
        """
        @return: the stored certificate chain and its key, both PEM, or
            L{None} when either is missing.
        """
        chain, key = _read(self.cert_path), _read(self.key_path)
        if chain is None or key is None:
            return None
        return chain, key

    def save_certificate(self, chain_pem: bytes, key_pem: bytes) -> None:
        """
        Keep a new certificate chain and its key, the key first.
        """
        _write(self.key_path, key_pem)
        _write(self.cert_path, chain_pem)

    def account_key(self) -> jose.JWKRSA:
        """
        @return: the account's key, made and kept the first time.
        """
        pem = _read(self._account_key)
        if pem is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write(self._account_key, pem)
        return jose.JWKRSA(key=serialization.load_pem_private_key(pem, password=None))

    def account(self, directory: str) -> Optional[messages.RegistrationResource]:
        """
        @param directory: the ACME directory URL in use.
        @return: the account registered with that directory, or L{None}
            when none is kept (or one for another directory).
        """
        text = _read(self._account)
        if text is None:
            return None
        try:
            data = json.loads(text)
            if data.get("directory") != directory:
                return None
            return messages.RegistrationResource.from_json(data["account"])
        except (ValueError, KeyError, TypeError, jose.DeserializationError):
            return None

    def save_account(self, directory: str, account: messages.RegistrationResource) -> None:
        """
        Keep the account registered with C{directory}.
        """
        data = {"directory": directory, "account": json.loads(account.json_dumps())}
        _write(self._account, json.dumps(data, indent=2).encode("utf-8") + b"\n")


def leaf(chain_pem: bytes) -> x509.Certificate:
    """
    @param chain_pem: a PEM certificate chain.
    @return: its first certificate.
    @raise ValueError: when it holds none.
    """
    return x509.load_pem_x509_certificate(chain_pem)


def _utc(cert: x509.Certificate, name: str) -> datetime.datetime:
    """
    @return: C{cert}'s C{not_valid_before} or C{not_valid_after}, aware.
    """
    aware = getattr(cert, f"{name}_utc", None)
    if aware is not None:
        return aware
    return getattr(cert, name).replace(tzinfo=datetime.timezone.utc)


def not_after(cert: x509.Certificate) -> float:
    """
    @return: when C{cert} expires, in POSIX seconds.
    """
    return _utc(cert, "not_valid_after").timestamp()


def _names(cert: x509.Certificate) -> List[str]:
    """
    @return: the DNS names of C{cert}'s subject alternative names, lower case.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.value.get_values_for_type(x509.DNSName)]


@attr.s(auto_attribs=True, frozen=True)
class Problem:
    """
    Why a stored certificate is not served as it is.

    @ivar reason: what is wrong, for the log.
    @ivar servable: whether it may be served meanwhile: it is valid, but
        expires within 30 days.
    """

    reason: str
    servable: bool = False


def certificate_problem(
    chain_pem: bytes, key_pem: bytes, domains: Sequence[str], now: float
) -> Optional[Problem]:
    """
    Whether a stored certificate can be served, and for how long.

    @param chain_pem: the PEM certificate chain.
    @param key_pem: its PEM key.
    @param domains: the names it must cover.
    @param now: the time, in POSIX seconds.
    @return: why it cannot be served as it is (it is not PEM, its key does
        not match, it misses a domain, it is not valid yet, it has expired,
        or it expires within 30 days), or L{None}.
    """
    try:
        server_context(chain_pem, key_pem, "the stored certificate", "the stored key")
        cert = leaf(chain_pem)
    except (TLSConfigError, ValueError) as e:
        return Problem(str(getattr(e, "reason", e)))
    missing = [name for name in domains if name not in _names(cert)]
    if missing:
        return Problem(f"it does not cover {', '.join(missing)}")
    if _utc(cert, "not_valid_before").timestamp() > now:
        return Problem("it is not valid yet")
    expiry = not_after(cert)
    when = _utc(cert, "not_valid_after").strftime("%Y-%m-%d %H:%M UTC")
    if expiry <= now:
        return Problem(f"it expired on {when}")
    if expiry - now <= RENEW_BEFORE:
        return Problem(f"it expires on {when}, within 30 days", servable=True)
    return None


def connect(config: AcmeConfig, storage: Storage) -> ClientV2:
    """
    Reach the ACME server with the account: registered the first time
    (agreeing to the terms of service) and kept; looked up again by its
    key when the kept one is unknown to the server.

    @return: a client acting for the account.
    """
    key = storage.account_key()
    net = ClientNetwork(
        key,
        verify_ssl=config.ca_bundle or True,  # type: ignore[arg-type]
        user_agent=f"phantom-frame/{__version__} acme-python",
        timeout=_TIMEOUT,
    )
    client = ClientV2(ClientV2.get_directory(config.directory, net), net)
    account = storage.account(config.directory)
    if account is not None:
        try:
            client.query_registration(account)
            return client
        except messages.Error as e:
            if e.code != "accountDoesNotExist":
                raise
    registration = messages.NewRegistration.from_data(
        email=config.email, terms_of_service_agreed=True
    )
    try:
        account = client.new_account(registration)
    except errors.ConflictError as e:
        # The server knows this key already: use that account.
        account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
        net.account = account
    storage.save_account(config.directory, account)
    return client


@attr.s(auto_attribs=True, frozen=True)
class Pending:
    """
    An order waiting for its HTTP-01 challenges.

    @ivar order: the order.
    @ivar key_pem: the new certificate's private key, PEM.
    @ivar challenges: C{(token, key authorization, challenge)} for each
        authorization still to validate: the token is answered with the
        key authorization at C{/.well-known/acme-challenge/TOKEN}.
    """

    order: messages.OrderResource
    key_pem: bytes
    challenges: Tuple[Tuple[str, str, Any], ...]


def new_order(client: ClientV2, domains: Sequence[str]) -> Pending:
    """
    Make a new key and order a certificate for it.

    @param client: acts for the account.
    @param domains: the names the certificate is for.
    @return: the order and its HTTP-01 challenges.
    @raise AcmeError: when an authorization offers no HTTP-01 challenge.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    order = client.new_order(crypto_util.make_csr(key_pem, list(domains)))
    found = []
    for authorization in order.authorizations:
        if authorization.body.status == messages.STATUS_VALID:
            continue
        http01 = [
            body for body in authorization.body.challenges if isinstance(body.chall, challenges.HTTP01)
        ]
        if not http01:
            name = authorization.body.identifier.value
            raise AcmeError(f"the ACME server offers no HTTP-01 challenge for {name}")
        response, validation = http01[0].response_and_validation(client.net.key)
        found.append((http01[0].chall.encode("token"), validation, (http01[0], response)))
    return Pending(order, key_pem, tuple(found))


def _wait(stopping: threading.Event, seconds: float) -> None:
    """
    @raise Stopped: when the service stops during the wait.
    """
    if stopping.wait(seconds):
        raise Stopped()


def _refused(authorization: messages.AuthorizationResource) -> str:
    """
    @return: why the server did not validate C{authorization}.
    """
    name = authorization.body.identifier.value
    for body in authorization.body.challenges:
        if body.error is not None:
            detail = body.error.detail or body.error.typ
            return f"{name}: {detail}"
    return f"{name}: authorization {authorization.body.status}"


def finish(client: ClientV2, pending: Pending, stopping: threading.Event) -> bytes:
    """
    Answer the challenges (already published), wait for the server to
    validate them, then finalize the order.

    @param client: acts for the account.
    @param pending: the order.
    @param stopping: set when the service stops: the waits end at once.
    @return: the certificate chain, PEM.
    @raise AcmeError: when a name is not validated, or the certificate is
        not issued in time.
    @raise Stopped: when C{stopping} is set.
    """
    for _, _, (body, response) in pending.challenges:
        client.answer_challenge(body, response)
    deadline = time.monotonic() + _DEADLINE
    authorizations = []
    for authorization in pending.order.authorizations:
        delay = 0.1
        while authorization.body.status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
            if time.monotonic() > deadline:
                raise AcmeError(f"{authorization.body.identifier.value}: not validated in {_DEADLINE:g} s")
            _wait(stopping, delay)
            delay = min(delay * 2, 2.0)
            authorization, _ = client.poll(authorization)
        if authorization.body.status != messages.STATUS_VALID:
            raise AcmeError(_refused(authorization))
        authorizations.append(authorization)
    order = pending.order.update(authorizations=authorizations)
    try:
        order = client.begin_finalization(order)
    except messages.Error as e:
        if e.code != "orderNotReady":
            raise
    while True:
        if stopping.is_set():
            raise Stopped()
        step = datetime.datetime.now() + datetime.timedelta(seconds=2)
        try:
            order = client.poll_finalization(order, step)
        except errors.TimeoutError:
            if time.monotonic() > deadline:
                raise AcmeError(f"the certificate was not issued in {_DEADLINE:g} s") from None
            continue
        return order.fullchain_pem.encode("ascii")
