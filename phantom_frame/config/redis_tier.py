"""
The Redis tier's configuration: checking C{redis_url}, C{redis_prefix} and
C{rate_limit_storage} (L{RATE_LIMIT_STORAGE}), and what C{phantom-frame check} learns from the server itself
(L{eviction_warning}).
"""

from __future__ import annotations

import re
import socket
from typing import Any, List, Optional

import attr

from phantom_frame.cache.redisurl import RedisAddress, parse_redis_url
from phantom_frame.cache.sentinel import ReplyError, encode, parse_reply
from phantom_frame.config.values import Invalid, choice_check, show

def check_redis_url(value: object) -> str:
    """
    @return: C{value}, a C{redis://}, C{redis+sentinel://} or C{unix://}
        URL.
    @raise Invalid: otherwise, saying what is wrong with it.
    """
    try:
        parse_redis_url(value)  # type: ignore[arg-type]
    except ValueError as e:
        why = str(e).partition(f"{value!r}: ")[2] if isinstance(value, str) and value.startswith("redis+sentinel:") else None
        raise Invalid(
            "expected redis://[:password@]host:port/db,"
            " redis+sentinel://[:password@]host:26379,host:26379/SERVICE[/db] or unix:///path?db=N,"
            f" got {show(value)}" + (f" ({why})" if why else "")
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


def _exchange(address: RedisAddress, commands: List[bytes], timeout: float) -> Optional[List[Any]]:
    """
    Send C{commands} to the server at C{address} (its UNIX socket, or its
    host and port) and read their replies, over a blocking socket:
    C{phantom-frame check} runs no reactor.

    @return: one reply per command, or L{None} when the server cannot be
        reached or does not answer them all in time.
    """
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
            sock.sendall(b"".join(commands))
            data, replies, at = b"", [], 0
            while len(replies) < len(commands):
                parsed = parse_reply(data, at)
                if parsed is None:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return None
                    data += chunk
                    continue
                reply, at = parsed
                replies.append(reply)
            return replies
    except (OSError, ValueError):
        return None


def _master(address: RedisAddress, timeout: float) -> Optional[RedisAddress]:
    """
    @return: C{address}, or for Sentinels the address of the master the
        first of them to answer names; L{None} when none does.
    """
    if not address.sentinels:
        return address
    auth = [encode("AUTH", address.sentinel_password)] if address.sentinel_password is not None else []
    for host, port in address.sentinels:
        sentinel = RedisAddress(host=host, port=port)
        replies = _exchange(sentinel, auth + [encode("SENTINEL", "get-master-addr-by-name", address.service or "")], timeout)
        named = replies[-1] if replies else None
        if isinstance(named, list) and len(named) == 2 and all(isinstance(n, bytes) for n in named):
            return attr.evolve(address, host=named[0].decode("utf-8"), port=int(named[1]), sentinels=())
    return None


def _ask_policy(url: str, timeout: float) -> Optional[str]:
    """
    Ask the Redis of C{url} (through its Sentinels, for a
    C{redis+sentinel://} URL) for its C{maxmemory-policy}.

    @return: the policy, or L{None} when the server cannot be reached or
        will not say (C{CONFIG} renamed, authentication refused).
    """
    address = _master(parse_redis_url(url), timeout)
    if address is None:
        return None
    auth = [encode("AUTH", address.password)] if address.password is not None else []
    replies = _exchange(address, auth + [encode("CONFIG", "GET", "maxmemory-policy")], timeout)
    if not replies or any(isinstance(reply, ReplyError) for reply in replies):
        return None
    policy = replies[-1]
    if not isinstance(policy, list) or len(policy) != 2 or not isinstance(policy[1], bytes):
        return None
    return policy[1].decode("utf-8", "replace")


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
