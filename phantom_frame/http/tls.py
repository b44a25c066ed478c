"""
The HTTPS listener's certificate: loaded and checked at start, TLS 1.2 or
newer, layered over any listening endpoint, and reloadable without dropping
connections.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IProtocolNegotiationFactory
from twisted.logger import Logger
from zope.interface import implementer
from twisted.protocols.tls import TLSMemoryBIOFactory

log = Logger()

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class TLSConfigError(ValueError):
    """
    The certificate or key cannot be used; the message names the key.

    @ivar key: the configuration key at fault, C{cert_path} or C{key_path}.
    @ivar reason: what is wrong with its file.
    """

    def __init__(self, key: str, reason: str) -> None:
        """
        @param key: see L{key}.
        @param reason: see L{reason}.
        """
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(key, f"cannot read {path}: {e.strerror}") from None


def load_server_context(cert_path: str, key_path: str) -> SSL.Context:
    """
    Load a PEM certificate chain and its PEM private key into a server
    context that accepts TLS 1.2 and newer.

    @param cert_path: the leaf certificate followed by its intermediates.
    @param key_path: the private key of the leaf certificate.
    @raise TLSConfigError: when a file is missing, unreadable, not PEM, or
        the key does not belong to the certificate; the message names the
        config key at fault.
    """
    chain_pem = _read(cert_path, "cert_path")
    key_pem = _read(key_path, "key_path")
    return server_context(chain_pem, key_pem, cert_path, key_path)


def server_context(
    chain_pem: bytes,
    key_pem: bytes,
    cert_source: str = "the certificate",
    key_source: str = "the key",
) -> SSL.Context:
    """
    Make a server context that accepts TLS 1.2 and newer from a PEM
    certificate chain and its PEM private key.

    @param chain_pem: the leaf certificate followed by its intermediates.
    @param key_pem: the private key of the leaf certificate.
    @param cert_source: where C{chain_pem} comes from, for messages.
    @param key_source: where C{key_pem} comes from, for messages.
    @raise TLSConfigError: when they are not PEM, or the key does not
        belong to the certificate; the key of the error is C{cert_path} or
        C{key_path}.
    """
    blocks: List[bytes] = _PEM_CERT.findall(chain_pem)
    if not blocks:
        raise TLSConfigError("cert_path", f"no PEM certificate in {cert_source}")
    try:
        chain = [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as e:
        raise TLSConfigError("cert_path", f"invalid certificate in {cert_source}: {e}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TLSConfigError("key_path", f"no usable PEM private key in {key_source}") from None
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.set_session_id(b"phantom-frame")
    # ALPN: HTTP/2 when twisted.web can speak it (the h2 extra), else
    # HTTP/1.1, as the listening site advertises.
    context.set_alpn_select_callback(_select_protocol)
    try:
        context.use_certificate(_compatible(chain[0]))
        for extra in chain[1:]:
            context.add_extra_chain_cert(_compatible(extra))
        context.use_privatekey(_compatible_key(key))
        context.check_privatekey()
    except SSL.Error:
        raise TLSConfigError(
            "key_path", f"the key in {key_source} does not match the certificate in {cert_source}"
        ) from None
    return context


def _select_protocol(connection: SSL.Connection, offered: List[bytes]) -> Any:
    """
    ALPN: the first protocol the listening factory accepts (its preference
    order) that the client offered.
    """
    tls = connection.get_app_data()
    factory = getattr(getattr(tls, "factory", None), "wrappedFactory", None)
    negotiation = IProtocolNegotiationFactory(factory, None)
    accepted = negotiation.acceptableProtocols() if negotiation is not None else [b"http/1.1"]
    for protocol in accepted:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _compatible(cert: x509.Certificate) -> Any:
    # pyOpenSSL >= 24.3 takes cryptography objects; older ones need X509.
    if _TAKES_CRYPTOGRAPHY:
        return cert
    return crypto.X509.from_cryptography(cert)


def _compatible_key(key: Any) -> Any:
    if _TAKES_CRYPTOGRAPHY:
        return key
    return crypto.PKey.from_cryptography_key(key)


_TAKES_CRYPTOGRAPHY = "x509.Certificate" in str(
    getattr(SSL.Context.use_certificate, "__annotations__", {}).get("cert", "")
)


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableContext:
    """
    A connection creator whose certificate can be replaced while listening:
    new connections get the new one, open connections keep theirs.

    @ivar cert_path: the PEM certificate chain L{reload} reads.
    @ivar key_path: the PEM private key L{reload} reads.
    """

    def __init__(self, cert_path: str, key_path: str, load: bool = True) -> None:
        """
        @param cert_path: see L{cert_path}.
        @param key_path: see L{key_path}.
        @param load: load the files now; with L{False} the certificate
            comes later, from L{load_pem} or L{reload}, and L{ready} is L{False}
            until then: whoever listens with this context waits for it.
        @raise TLSConfigError: as L{load_server_context}, when loading.
        """
        self.cert_path = cert_path
        self.key_path = key_path
        self._context: Optional[SSL.Context] = None
        if load:
            self._context = load_server_context(cert_path, key_path)

    @property
    def ready(self) -> bool:
        """
        Whether there is a certificate to serve.
        """
        return self._context is not None

    def getContext(self) -> SSL.Context:
        """
        @return: the context of the current certificate.
        @raise TLSConfigError: when there is no certificate yet.
        """
        if self._context is None:
            raise TLSConfigError("cert_path", "no certificate loaded yet")
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        @return: a server-side TLS connection with the current certificate.
        @raise TLSConfigError: when there is no certificate yet.
        """
        connection = SSL.Connection(self.getContext(), None)
        connection.set_app_data(tlsProtocol)
        return connection

    def load_pem(
        self,
        chain_pem: bytes,
        key_pem: bytes,
        cert_source: str = "the new certificate chain",
        key_source: str = "the new key",
    ) -> None:
        """
        Serve a new certificate, given as bytes: new connections get it,
        open connections keep theirs. Broken bytes change nothing.

        @param chain_pem: the PEM leaf certificate followed by its
            intermediates.
        @param key_pem: its PEM private key.
        @param cert_source: where C{chain_pem} comes from, for messages.
        @param key_source: where C{key_pem} comes from, for messages.
        @raise TLSConfigError: as L{server_context}.
        """
        self._context = server_context(chain_pem, key_pem, cert_source, key_source)

    def reload(self) -> bool:
        """
        Load the files again; keep the old certificate if they are broken.

        @return: whether the new certificate is in use.
        """
        try:
            self._context = load_server_context(self.cert_path, self.key_path)
        except TLSConfigError as e:
            log.error("TLS certificate not reloaded, keeping the old one: {error}", error=str(e))
            return False
        log.info("TLS certificate reloaded from {path}", path=self.cert_path)
        return True


class _TLSFactory(TLSMemoryBIOFactory):
    """
    Server-side TLS that closes each connection at once, before any
    handshake, while its context has no certificate yet.
    """

    def __init__(self, context: ReloadableContext, factory: Any) -> None:
        super().__init__(context, False, factory)
        self._context = context

    def buildProtocol(self, addr: Any) -> Any:
        """
        @return: a TLS protocol, or L{None} (the connection is closed) while
            there is no certificate.
        """
        if not self._context.ready:
            return None
        return super().buildProtocol(addr)


def tls_factory(context: ReloadableContext, factory: Any) -> TLSMemoryBIOFactory:
    """
    @return: C{factory} behind TLS with C{context}, for any stream endpoint;
        while C{context} has no certificate yet (see
        L{ReloadableContext.ready}), connections are closed as soon as they
        are accepted.
    """
    return _TLSFactory(context, factory)
