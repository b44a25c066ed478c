"""
A real Pebble (Let's Encrypt's test ACME server) on loopback, started by a
test: its own TLS certificate made at test time, its listeners on port 0
(read back from the process's sockets), its HTTP-01 validation pointed at
a port the test already listens on.

Without the C{pebble} program the tests that need it are skipped, unless
C{PHANTOM_FRAME_REQUIRE_PEBBLE} is set (CI sets it): then they fail.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import ssl
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Set

import attr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

#: Set (to anything) to make a missing Pebble a failure instead of a skip.
REQUIRE = "PHANTOM_FRAME_REQUIRE_PEBBLE"


def pebble_program() -> str:
    """
    @return: the path of the C{pebble} program.
    @raise SkipTest: when it is not installed (and not required).
    """
    found = shutil.which("pebble")
    if found is not None:
        return found
    message = "pebble is not installed (Debian: apt-get install pebble)"
    if os.environ.get(REQUIRE):
        raise AssertionError(f"{message}, and {REQUIRE} is set")
    raise SkipTest(message)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def server_certificate(directory: str) -> Dict[str, str]:
    """
    Make a CA and a certificate it signs for C{127.0.0.1} and
    C{localhost}, for Pebble's own HTTPS listeners.

    @param directory: where the files go.
    @return: the paths of C{ca} (the CA certificate), C{cert} and C{key}.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("phantom-frame test CA"))
        .issuer_name(_name("phantom-frame test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: os.path.join(directory, f"pebble-{name}.pem") for name in ("ca", "cert", "key")}
    for name, data in (
        ("ca", ca.public_bytes(serialization.Encoding.PEM)),
        ("cert", cert.public_bytes(serialization.Encoding.PEM)),
        ("key", _pem_key(key)),
    ):
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths


class _Output(ProcessProtocol):
    """
    Keeps Pebble's output; C{ended} fires when it exits.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """
        Keep C{data}.
        """
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        """
        Fire C{ended}.
        """
        self.ended.callback(None)


def _listening(pid: int) -> List[int]:
    """
    @return: the TCP ports process C{pid} listens on (from C{/proc}).
    """
    inodes: Set[str] = set()
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            target = os.readlink(os.path.join(fds, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))


def _status(url: str, ca: str) -> int:
    """
    @return: the status of C{GET url}, trusting C{ca} (blocking).
    """
    context = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def fetch(url: str, ca: str) -> bytes:
    """
    @return: the body of C{GET url}, trusting C{ca} (blocking).
    """
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.read()


@attr.s(auto_attribs=True)
class Pebble:
    """
    A running Pebble.

    @ivar directory: its ACME directory URL.
    @ivar management: the base URL of its management API (C{/roots/0} is
        the root of the certificates it issues).
    @ivar ca_bundle: the file of the CA its own HTTPS listeners' certificate
        comes from.
    @ivar process: its process transport.
    """

    directory: str
    management: str
    ca_bundle: str
    process: Any

    def root(self) -> Deferred[bytes]:
        """
        @return: the PEM root of the certificates it issues.
        """
        return deferToThread(fetch, self.management + "/roots/0", self.ca_bundle)


async def start_pebble(testcase: Any, http_port: int) -> Pebble:
    """
    Start Pebble for a test, stopped when the test ends: no sleeps in its
    validation, no rejected nonces, no reused authorizations.

    @param testcase: a real-reactor L{twisted.trial.unittest.TestCase}.
    @param http_port: where its HTTP-01 validation connects
        (C{http://DOMAIN:PORT/.well-known/acme-challenge/...}).
    @return: the running Pebble, its listeners accepting.
    """
    program = pebble_program()
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    tls = server_certificate(directory)
    config = {
        "pebble": {
            "listenAddress": "127.0.0.1:0",
            "managementListenAddress": "127.0.0.1:0",
            "certificate": tls["cert"],
            "privateKey": tls["key"],
            "httpPort": http_port,
            "tlsPort": http_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    path = os.path.join(directory, "pebble-config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    output = _Output()
    process = reactor.spawnProcess(output, program, [program, "-config", path], env=env, path=directory)

    async def stop() -> None:
        if not output.ended.called:
            process.signalProcess("TERM")
        await output.ended

    testcase.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    ports: List[int] = []
    for _ in range(200):
        if output.ended.called:
            break
        ports = _listening(process.pid)
        if len(ports) == 2:
            break
        await deferLater(reactor, 0.05, lambda: None)
    if len(ports) != 2:
        raise AssertionError(f"Pebble did not start: {output.output.decode('utf-8', 'replace')}")
    found: Optional[int] = None
    for port in ports:
        if await deferToThread(_status, f"https://127.0.0.1:{port}/dir", tls["ca"]) == 200:
            found = port
    assert found is not None, ports
    other = [port for port in ports if port != found][0]
    return Pebble(
        directory=f"https://127.0.0.1:{found}/dir",
        management=f"https://127.0.0.1:{other}",
        ca_bundle=tls["ca"],
        process=process,
    )
