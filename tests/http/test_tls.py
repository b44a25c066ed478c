"""
Tests for L{phantom_frame.http.tls}: certificate loading and checks, the HTTPS
listener end to end, TLS versions, and reloading.
"""

from __future__ import annotations

import socket
import ssl as stdssl

import datetime
import warnings

import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface.verify import verifyObject
from twisted.internet.threads import deferToThread
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.internet.ssl import Certificate
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from phantom_frame import tap
from phantom_frame.http.tls import ReloadableContext, TLSConfigError, load_server_context, tls_factory


def make_pair(testcase, name: str = "localhost"):
    """
    Write a fresh self-signed certificate and its key to files.

    @return: the certificate path, the key path and the certificate's DER
        bytes.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = testcase.mktemp(), testcase.mktemp()
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


class LoadTests(SynchronousTestCase):
    """
    L{load_server_context} checks the files and names the key at fault.
    """

    def test_good_pair(self) -> None:
        """
        A matching certificate and key load into a connection creator.
        """
        cert_path, key_path, _ = make_pair(self)
        self.assertIsNotNone(load_server_context(cert_path, key_path))
        self.assertTrue(
            verifyObject(IOpenSSLServerConnectionCreator, ReloadableContext(cert_path, key_path))
        )

    def test_errors(self) -> None:
        """
        Missing, non-PEM and mismatched files are refused with the key named.
        """
        cert_path, key_path, _ = make_pair(self)
        other_cert, other_key, _ = make_pair(self)
        garbage = self.mktemp()
        with open(garbage, "wb") as f:
            f.write(b"not a pem file\n")
        cases = [
            ((self.mktemp(), key_path), "cert_path: cannot read"),
            ((cert_path, self.mktemp()), "key_path: cannot read"),
            ((garbage, key_path), "cert_path: no PEM certificate"),
            ((cert_path, garbage), "key_path: no usable PEM private key"),
            ((cert_path, other_key), "key_path: the key in"),
        ]
        for (c, k), message in cases:
            error = self.assertRaises(TLSConfigError, load_server_context, c, k)
            self.assertIn(message, str(error))

    def test_plugin_refuses_mismatch(self) -> None:
        """
        The plugin's options refuse a mismatched pair before anything starts.
        """
        cert_path, _, _ = make_pair(self)
        _, other_key, _ = make_pair(self)
        config = self.mktemp()
        with open(config, "w") as f:
            f.write(
                f'https_port = 3443\ncert_path = "{cert_path}"\nkey_path = "{other_key}"\n'
                '[server.a]\nproxy_url = "http://127.0.0.1:8080"\n'
            )
        error = self.assertRaises(UsageError, tap.Options().parseOptions, ["--config", config])
        self.assertIn("key_path", str(error))


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello over tls"


class ListenerTests(TestCase):
    """
    A real TLS listener on loopback.
    """

    def listen(self, context: ReloadableContext) -> int:
        port = reactor.listenTCP(0, tls_factory(context, Site(Hello())), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def test_https_request(self) -> None:
        """
        A client that trusts the certificate gets the page over HTTPS.
        """
        cert_path, key_path, _ = make_pair(self)
        port = self.listen(ReloadableContext(cert_path, key_path))
        pool = HTTPConnectionPool(reactor, persistent=False)
        with open(cert_path, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool)
        response = await agent.request(b"GET", b"https://localhost:%d/" % port)
        self.assertEqual(await treq.content(response), b"hello over tls")

    def handshake(self, port: int, **versions):
        def connect():
            context = stdssl.SSLContext(stdssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = stdssl.CERT_NONE
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                for name, value in versions.items():
                    setattr(context, name, value)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with context.wrap_socket(raw) as tls:
                    return tls.version(), tls.getpeercert(binary_form=True)

        return deferToThread(connect)

    async def test_alpn(self) -> None:
        """
        ALPN picks HTTP/2 when twisted.web can speak it (the h2 extra is
        installed), HTTP/1.1 otherwise.
        """
        from twisted.web.server import Site as WebSite

        cert_path, key_path, _ = make_pair(self)
        site = WebSite(Hello())
        port = reactor.listenTCP(
            0, tls_factory(ReloadableContext(cert_path, key_path), site), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)

        def connect():
            context = stdssl.SSLContext(stdssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = stdssl.CERT_NONE
            context.set_alpn_protocols(["h2", "http/1.1"])
            with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5) as raw:
                with context.wrap_socket(raw) as tls:
                    return tls.selected_alpn_protocol()

        chosen = await deferToThread(connect)
        expected = "h2" if b"h2" in site.acceptableProtocols() else "http/1.1"
        self.assertEqual(chosen, expected)

    async def test_old_tls_refused(self) -> None:
        """
        TLS 1.1 is refused; TLS 1.2 is accepted.
        """
        cert_path, key_path, _ = make_pair(self)
        port = self.listen(ReloadableContext(cert_path, key_path))
        version, _ = await self.handshake(
            port, minimum_version=stdssl.TLSVersion.TLSv1_2, maximum_version=stdssl.TLSVersion.TLSv1_2
        )
        self.assertEqual(version, "TLSv1.2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = {"minimum_version": stdssl.TLSVersion.TLSv1, "maximum_version": stdssl.TLSVersion.TLSv1_1}
        try:
            await self.handshake(port, **old)
        except (stdssl.SSLError, OSError):
            pass
        else:
            self.fail("a TLS 1.1 handshake succeeded")

    async def test_reload(self) -> None:
        """
        After a reload, new connections get the new certificate; a reload of
        broken files keeps the old one.
        """
        cert_path, key_path, first = make_pair(self)
        context = ReloadableContext(cert_path, key_path)
        port = self.listen(context)
        _, served = await self.handshake(port)
        self.assertEqual(served, first)
        new_cert, new_key, second = make_pair(self)
        with open(cert_path, "wb") as f, open(new_cert, "rb") as src:
            f.write(src.read())
        with open(key_path, "wb") as f, open(new_key, "rb") as src:
            f.write(src.read())
        self.assertTrue(context.reload())
        _, served = await self.handshake(port)
        self.assertEqual(served, second)
        with open(key_path, "wb") as f:
            f.write(b"broken")
        self.assertFalse(context.reload())
        self.flushLoggedErrors()
        _, served = await self.handshake(port)
        self.assertEqual(served, second)


class PemTests(SynchronousTestCase):
    """
    L{ReloadableContext} without a certificate yet, and loaded from bytes.
    """

    def read(self, path: str) -> bytes:
        """
        @return: the contents of C{path}.
        """
        with open(path, "rb") as f:
            return f.read()

    def test_waiting(self) -> None:
        """
        Made with C{load=False}, a context has no certificate: it is not
        L{ReloadableContext.ready}, makes no connection, and the factory of
        L{tls_factory} builds no protocol (the connection is closed) until
        a certificate is loaded from bytes.
        """
        cert_path, key_path, der = make_pair(self)
        context = ReloadableContext(cert_path + ".missing", key_path + ".missing", load=False)
        self.assertFalse(context.ready)
        self.assertRaises(TLSConfigError, context.getContext)
        factory = tls_factory(context, Site(Hello()))
        self.assertIsNone(factory.buildProtocol(None))
        context.load_pem(self.read(cert_path), self.read(key_path))
        self.assertTrue(context.ready)
        self.assertIsNotNone(factory.buildProtocol(None))
        served = context.serverConnectionForTLS(None).get_certificate().to_cryptography()
        self.assertEqual(served.public_bytes(serialization.Encoding.DER), der)

    def test_brokenBytes(self) -> None:
        """
        Bytes that are not a certificate, or a key that does not match,
        raise L{TLSConfigError} and keep the certificate in use.
        """
        cert_path, key_path, der = make_pair(self)
        other_cert, other_key, _ = make_pair(self)
        context = ReloadableContext(cert_path, key_path)
        error = self.assertRaises(TLSConfigError, context.load_pem, b"nothing", self.read(key_path))
        self.assertEqual(str(error), "cert_path: no PEM certificate in the new certificate chain")
        error = self.assertRaises(
            TLSConfigError, context.load_pem, self.read(cert_path), self.read(other_key), "chain.pem", "key.pem"
        )
        self.assertEqual(str(error), "key_path: the key in key.pem does not match the certificate in chain.pem")
        served = context.serverConnectionForTLS(None).get_certificate().to_cryptography()
        self.assertEqual(served.public_bytes(serialization.Encoding.DER), der)
        context.load_pem(self.read(other_cert), self.read(other_key))
        served = context.serverConnectionForTLS(None).get_certificate().to_cryptography()
        self.assertNotEqual(served.public_bytes(serialization.Encoding.DER), der)
