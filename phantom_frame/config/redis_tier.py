"""
The Redis tier's configuration: checking C{redis_url}, C{redis_prefix} and
C{rate_limit_storage} (L{RATE_LIMIT_STORAGE}), and what C{phantom-frame check} learns from the server itself
(L{eviction_warning}).
"""

from __future__ import annotations

import re
import socket
from typing import Optional

from phantom_frame.cache.bus import parse_redis_url
from phantom_frame.config.values import Invalid, choice_check, show

def check_redis_url(value: object) -> str:
    """
    @return: C{value}, a C{redis://} or C{unix://} URL.
    @raise Invalid: otherwise.
    """
    try:
        parse_redis_url(value)  # type: ignore[arg-type]
    except ValueError:
        raise Invalid(
            "expected redis://[:password@]host:port/db or unix:///path?db=N,"
            f" got {show(value)}"
        ) from None
    return value  # type: ignore[return-value]


def check_prefix(value: object) -> str:
    """
    @return: C{value}, letters, digits and C{_ - . :} only.
    @raise Invalid: otherwise.
    """
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.:-]+", value):
        return value
    raise Invalid(f"expected letters, digits, _ - . and : only, got {show(value)}")


#: Where rate-limit buckets live with a C{redis_url}: C{"redis"} (the
#: default: shared by every process and host on that Redis) or
#: C{"memory"} (each process its own). Without C{redis_url}, in memory.
RATE_LIMIT_STORAGE = ("redis", "memory")


def check_rate_limit_storage(value: object) -> str:
    """
    @return: C{value}, one of L{RATE_LIMIT_STORAGE}.
    @raise Invalid: otherwise.
    """
    return choice_check(RATE_LIMIT_STORAGE)(value)  # type: ignore[no-any-return]



#: The C{maxmemory-policy} values that evict by use (LRU or LFU).
EVICTING = frozenset({"allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-lfu"})


def _command(*args: str) -> bytes:
    """
    @return: C{args} as one RESP command.
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _ask_policy(url: str, timeout: float) -> Optional[str]:
    """
    Ask the Redis of C{url} for its C{maxmemory-policy} (a blocking socket:
    C{phantom-frame check} runs no reactor).

    @return: the policy, or L{None} when the server cannot be reached or
        will not say (C{CONFIG} renamed, authentication refused).
    """
    address = parse_redis_url(url)
    try:
        if address.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: object = address.path
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in (address.host or "") else socket.AF_INET)
            target = (address.host, address.port)
        with sock:
            sock.settimeout(timeout)
            sock.connect(target)  # type: ignore[arg-type]
            if address.password is not None:
                sock.sendall(_command("AUTH", address.password))
            sock.sendall(_command("CONFIG", "GET", "maxmemory-policy"))
            reply = b""
            while reply.count(b"\r\n") < (7 if address.password is not None else 5):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    lines = reply.split(b"\r\n")
    if address.password is not None:
        if not lines or not lines[0].startswith(b"+"):
            return None
        lines = lines[1:]
    if len(lines) < 5 or not lines[0].startswith(b"*2"):
        return None
    return lines[4].decode("utf-8", "replace")


def eviction_warning(url: str, timeout: float = 2.0) -> Optional[str]:
    """
    @return: a warning when the Redis of C{url} answers and its
        C{maxmemory-policy} does not evict by use (so a full Redis refuses
        writes instead of dropping the least used entries); L{None} when it
        does, or when it cannot be asked.
    """
    policy = _ask_policy(url, timeout)
    if policy is None or policy in EVICTING:
        return None
    return (
        f"redis_url: the Redis maxmemory-policy is {policy!r}; set maxmemory and an"
        " LRU or LFU policy (allkeys-lru) so that the cache stays within it"
    )


__all__ = [
    "EVICTING",
    "RATE_LIMIT_STORAGE",
    "check_prefix",
    "check_rate_limit_storage",
    "check_redis_url",
    "eviction_warning",
]
