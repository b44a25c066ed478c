"""
Where Redis listens: L{RedisAddress}, read from a C{redis_url} by
L{parse_redis_url}.

Three forms:

  - C{redis://[:password@]host[:port][/db]};
  - C{unix:///path[?db=N][&password=P]};
  - C{redis+sentinel://[:password@]host1[:port1],host2[:port2]/SERVICE[/db]}
    C{[?sentinel_password=S]}: the Sentinels (port 26379 when not given)
    watching the master named C{SERVICE}. C{password} is the master's
    (C{AUTH} on every connection to it), C{sentinel_password} the
    Sentinels' own, if they require one.
"""

from __future__ import annotations

from typing import Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

import attr

#: The port of a Sentinel given without one.
SENTINEL_PORT = 26379


@attr.s(frozen=True, auto_attribs=True)
class RedisAddress:
    """
    Where Redis listens, from a C{redis_url}.

    @ivar host: the TCP host, or L{None} for a UNIX socket or Sentinels.
    @ivar port: the TCP port.
    @ivar path: the UNIX socket's path, or L{None}.
    @ivar db: the database number.
    @ivar password: the password, or L{None}.
    @ivar sentinels: the C{(host, port)} of each Sentinel to ask for the
        master, in the order to ask them; empty without Sentinels.
    @ivar service: the master's name known to the Sentinels, or L{None}.
    @ivar sentinel_password: the Sentinels' password, or L{None}.
    """

    host: Optional[str] = None
    port: int = 6379
    path: Optional[str] = None
    db: int = 0
    password: Optional[str] = attr.ib(default=None, repr=False)
    sentinels: Tuple[Tuple[str, int], ...] = ()
    service: Optional[str] = None
    sentinel_password: Optional[str] = attr.ib(default=None, repr=False)


def _host_port(text: str, default: int) -> Tuple[str, int]:
    """
    @param text: C{host}, C{host:port}, C{[v6]} or C{[v6]:port}.
    @return: the host and port.
    @raise ValueError: on anything else.
    """
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"bad host {text!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, colon, port_text = text.partition(":")
        if not host or (colon and not port_text) or ":" in port_text:
            raise ValueError(f"bad host {text!r}")
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_text)


def _sentinel(url: str) -> RedisAddress:
    """
    Read a C{redis+sentinel://} URL (see the module docstring).
    """
    rest = url[len("redis+sentinel://") :]
    rest, _, query_text = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    query = parse_qs(query_text, keep_blank_values=True)
    unknown = set(query) - {"password", "sentinel_password", "db"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) if at and userinfo.partition(":")[2] else None
    password = query.get("password", [password])[0]
    if not hosts:
        raise ValueError("no Sentinel")
    sentinels = tuple(_host_port(unquote(one), SENTINEL_PORT) for one in hosts.split(","))
    names = path.split("/") if slash else []
    if not names or not names[0]:
        raise ValueError("no service name (redis+sentinel://host:26379/SERVICE)")
    if len(names) > 2 or (len(names) == 2 and not names[1].isdigit()):
        raise ValueError("expected /SERVICE or /SERVICE/db after the Sentinels")
    db = int(names[1]) if len(names) == 2 else int(query.get("db", ["0"])[0])
    return RedisAddress(
        db=db,
        password=password,
        sentinels=sentinels,
        service=unquote(names[0]),
        sentinel_password=query.get("sentinel_password", [None])[0],
    )


def parse_redis_url(url: str) -> RedisAddress:
    """
    Read C{redis://[:password@]host[:port][/db]},
    C{unix:///path[?db=N][&password=P]} or
    C{redis+sentinel://[:password@]host[:port],.../SERVICE[/db][?sentinel_password=S]}.

    @return: the address.
    @raise ValueError: on anything else.
    """
    if not isinstance(url, str):
        raise ValueError(f"expected a redis://, redis+sentinel:// or unix:// URL, got {url!r}")
    try:
        if url.startswith("redis+sentinel://"):
            return _sentinel(url)
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        password = unquote(parts.password) if parts.password else None
        password = query.get("password", [password])[0]
        if parts.scheme == "redis":
            if not parts.hostname:
                raise ValueError("no host")
            db = parts.path.strip("/")
            return RedisAddress(
                host=parts.hostname,
                port=parts.port or 6379,
                db=int(db) if db else int(query.get("db", ["0"])[0]),
                password=password,
            )
        if parts.scheme == "unix":
            if not parts.path.startswith("/") or parts.netloc:
                raise ValueError("expected unix:///absolute/path")
            return RedisAddress(path=parts.path, db=int(query.get("db", ["0"])[0]), password=password)
    except ValueError as e:
        raise ValueError(f"bad Redis URL {url!r}: {e}") from None
    raise ValueError(f"expected a redis://, redis+sentinel:// or unix:// URL, got {url!r}")


__all__ = ["RedisAddress", "SENTINEL_PORT", "parse_redis_url"]
