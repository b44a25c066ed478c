"""
The C{[acme]} table: certificates for the HTTPS listener from an ACME
server (Let's Encrypt, or a private one such as Pebble), validated with
HTTP-01 on the HTTP listener.

L{parse_acme} checks the table into an L{AcmeConfig}; L{acme_problems}
checks what the table asks of the rest of the file (an HTTPS listener, no
C{cert_path}/C{key_path}, no server under the challenge path).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import attr
from cryptography import x509

from phantom_frame.config.files import directory_problem, unreadable
from phantom_frame.config.network import url_check
from phantom_frame.config.tables import ENV_PREFIX, Kind, TableChecker, quote_key
from phantom_frame.config.values import (
    Invalid,
    check_path,
    env_list,
    env_text,
    has_control,
    show,
)

__all__ = [
    "ACME_KEYS",
    "CHALLENGE_PATH",
    "AcmeConfig",
    "acme_problems",
    "check_domains",
    "check_email",
    "parse_acme",
]

#: The path prefix of HTTP-01 challenges (RFC 8555, section 8.3).
CHALLENGE_PATH = "/.well-known/acme-challenge"


@attr.s(auto_attribs=True, frozen=True)
class AcmeConfig:
    """
    The C{[acme]} table.

    @ivar directory: the ACME server's directory URL (C{https://}).
    @ivar email: the account's contact address.
    @ivar domains: the names the certificate is for, lower case, ASCII
        (international names in their C{xn--} form), in file order.
    @ivar storage: the absolute directory where the account key, the
        certificate chain and its key are kept (created C{0700}).
    @ivar ca_bundle: the absolute path of a PEM file of the certificates
        trusted for the ACME server itself, or L{None} for the system's.
    """

    directory: str
    email: str
    domains: Tuple[str, ...] = attr.ib(converter=tuple)
    storage: str
    ca_bundle: Optional[str] = None


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_EMAIL_FORM = 'expected an e-mail address such as "admin@example.com"'


def _domain_problem(name: str) -> Tuple[Optional[str], str]:
    """
    @param name: a host name from the file.
    @return: why no HTTP-01 certificate can be had for it (or L{None}), and
        the name in its ASCII, lower-case form.
    """
    if name.startswith("*."):
        return "a wildcard name cannot be validated over HTTP-01", name
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return "an IP address, not a host name", name
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        return f"not a valid international domain name: {e.__cause__ or e}", name
    if len(ascii_name) > 253 or not _DNS_NAME.match(ascii_name):
        return "not a host name (letters, digits and -, labels split by dots)", name
    return None, ascii_name


def check_domains(value: object) -> Tuple[str, ...]:
    """
    @return: C{value}, a non-empty list of distinct host names, as
        L{AcmeConfig.domains} holds them.
    @raise Invalid: otherwise; each bad item is reported at its index.
    """
    form = 'expected a list of host names such as ["example.com", "www.example.com"]'
    if not isinstance(value, list) or not value:
        raise Invalid(f"{form}, got {show(value)}")
    problems: List[Tuple[str, str]] = []
    names: List[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            problems.append((f"[{index}]", f"expected a host name, got {show(item)}"))
            continue
        problem, name = _domain_problem(item)
        if problem is not None:
            problems.append((f"[{index}]", f"{show(item)} is {problem}"))
        elif name in names:
            problems.append((f"[{index}]", f"{show(item)} is listed twice"))
        else:
            names.append(name)
    if problems:
        raise Invalid.several(problems)
    return tuple(names)


def check_email(value: object) -> str:
    """
    @return: C{value}, an e-mail address: C{local@host}, without spaces or
        control characters.
    @raise Invalid: otherwise.
    """
    if isinstance(value, str) and not has_control(value) and not any(c.isspace() for c in value):
        local, at, host = value.rpartition("@")
        if at and local and _domain_problem(host)[0] is None and "." in host:
            return value
    raise Invalid(f"{_EMAIL_FORM}, got {show(value)}")


_url = url_check("an https:// URL of an ACME directory", False)


def _check_directory(value: object) -> str:
    """
    @return: C{value}, an C{https://} URL.
    @raise Invalid: otherwise (ACME servers are reached over HTTPS only).
    """
    url = _url(value)
    if not url.startswith("https://"):
        raise Invalid(
            f"expected an https:// URL of an ACME directory (ACME is HTTPS only), got {show(value)}"
        )
    return url


_KINDS: Dict[str, Kind] = {
    "directory": Kind(check=_check_directory, from_env=env_text),
    "email": Kind(check=check_email, from_env=env_text),
    "domains": Kind(check=check_domains, from_env=env_list),
    "storage": Kind(check=check_path, from_env=env_text),
    "ca_bundle": Kind(check=check_path, from_env=env_text),
}
_REQUIRED = {
    "directory": 'the ACME directory URL, such as "https://acme-v02.api.letsencrypt.org/directory"',
    "email": "the account's contact address",
    "domains": "the host names the certificate is for",
    "storage": "the directory where the account and the certificate are kept",
}

ACME_KEYS: Tuple[str, ...] = tuple(_KINDS)
"""
Every key accepted in the C{[acme]} table.
"""


def _bundle_problem(path: str) -> Optional[str]:
    """
    @param path: an absolute file name.
    @return: why it is not a PEM file of certificates, or L{None}.
    """
    reason = unreadable(path)
    if reason is not None:
        return f"cannot read {path!r}: {reason}"
    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return f"no PEM certificate in {path!r}"
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as e:
        return f"invalid certificate in {path!r}: {e}"
    return None


def parse_acme(checker: TableChecker, raw: object) -> Optional[AcmeConfig]:
    """
    Check the C{[acme]} table.

    @param checker: collects the errors, resolves C{$env:} references and
        relative paths.
    @param raw: the table's value.
    @return: the table, or L{None} when it has errors (reported).
    """
    if isinstance(raw, str) and raw.startswith(ENV_PREFIX):
        checker.error("acme", "[acme] is a table and cannot come from $env:")
        return None
    if not isinstance(raw, Mapping):
        checker.error("acme", f"expected an [acme] table, got {show(raw)}")
        return None
    result = checker.table("acme.", raw, _KINDS)
    values: Dict[str, Any] = dict(result.values)
    for key, what in _REQUIRED.items():
        if key in result.unset:
            checker.error(f"acme.{key}", f"required, but $env:{result.unset[key]} is not set")
        elif not result.present(key):
            checker.error(f"acme.{key}", f"required: {what}")
    if "storage" in values:
        values["storage"] = checker.path(values["storage"])
        problem = directory_problem(values["storage"])
        if problem is not None:
            checker.error("acme.storage", problem)
            del values["storage"]
    if "ca_bundle" in values:
        values["ca_bundle"] = checker.path(values["ca_bundle"])
        problem = _bundle_problem(values["ca_bundle"])
        if problem is not None:
            checker.error("acme.ca_bundle", problem)
            del values["ca_bundle"]
    if result.failed or any(key not in values for key in _REQUIRED):
        return None
    return AcmeConfig(**values)


def acme_problems(root: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """
    What an C{[acme]} table asks of the rest of the file.

    @param root: the whole file's tables.
    @return: C{(key path, message)} for each problem: no HTTPS listener to
        use the certificate, C{cert_path} or C{key_path} given as well, a
        server mounted at or under the challenge path.
    """
    problems: List[Tuple[str, str]] = []
    if "https_port" not in root and "https_listen" not in root:
        problems.append(
            ("acme", "needs https_port or https_listen: its certificate is for the HTTPS listener")
        )
    for key in ("cert_path", "key_path"):
        if key in root:
            problems.append((key, "[acme] provides the certificate; give one or the other"))
    servers = root.get("server")
    for name, block in servers.items() if isinstance(servers, dict) else ():
        bind_to = block.get("bind_to") if isinstance(block, dict) else None
        if not isinstance(bind_to, str):
            continue
        path = f"server.{quote_key(name)}"
        if bind_to == CHALLENGE_PATH or bind_to.startswith(CHALLENGE_PATH + "/"):
            problems.append(
                (
                    f"{path}.bind_to",
                    f"{bind_to!r} is where the proxy answers ACME challenges ([acme])",
                )
            )
    return problems
