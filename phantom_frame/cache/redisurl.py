"""
Where Redis listens: L{RedisAddress}, read from a C{redis_url} by
L{parse_redis_url}.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

import attr


@attr.s(frozen=True, auto_attribs=True)
class RedisAddress:
    """
    Where Redis listens, from a C{redis_url}.

    @ivar host: the TCP host, or L{None} for a UNIX socket.
    @ivar port: the TCP port.
    @ivar path: the UNIX socket's path, or L{None}.
    @ivar db: the database number.
    @ivar password: the password, or L{None}.
    """

    host: Optional[str] = None
    port: int = 6379
    path: Optional[str] = None
    db: int = 0
    password: Optional[str] = attr.ib(default=None, repr=False)


def parse_redis_url(url: str) -> RedisAddress:
    """
    Read C{redis://[:password@]host[:port][/db]} or
    C{unix:///path[?db=N][&password=P]}.

    @return: the address.
    @raise ValueError: on anything else.
    """
    if not isinstance(url, str):
        raise ValueError(f"expected a redis:// or unix:// URL, got {url!r}")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    password = unquote(parts.password) if parts.password else None
    password = query.get("password", [password])[0]
    try:
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
    raise ValueError(f"expected a redis:// or unix:// URL, got {url!r}")


__all__ = ["RedisAddress", "parse_redis_url"]
