"""
C{phantom-frame check FILE}: validates a configuration file with the same
validator as the twistd plugin, then summarises it and warns about risky
settings (the command line itself is L{phantom_frame.cli}).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Callable, Dict, List, Optional, TextIO, Tuple

from phantom_frame.cache.patterns import RequestFilter
from phantom_frame.config.loader import Config, ConfigError, ServerConfig, load_config
from phantom_frame.proxy.settings import CacheStorageMode, CacheStrategy, CookiePolicy, ProxyMode

__all__ = [
    "PERSONAL_PATHS",
    "check",
    "physical_memory",
    "risks",
    "size",
    "summarize",
]

#: Paths that usually answer differently for each visitor; caching them is
#: only safe when the origin marks those answers private.
PERSONAL_PATHS = ("/account", "/cart", "/login", "/checkout", "/admin", "/me", "/profile")


def size(value: int) -> str:
    """
    @param value: a number of bytes.
    @return: it in the largest binary unit that keeps it at least 1
        (C{"256 MiB"}, C{"1.5 GiB"}, C{"512 B"}).
    """
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            break
        amount /= 1024
    text = f"{amount:.1f}".rstrip("0").rstrip(".")
    return f"{text} {unit}"


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:g}s"


def _server_details(server: ServerConfig) -> List[str]:
    """
    @return: the indented lines under a server's line in the summary.
    """
    proxy = server.proxy
    lines = []
    include = ", ".join(proxy.include_paths) if proxy.include_paths else "all"
    exclude = ", ".join(proxy.exclude_paths) if proxy.exclude_paths else "none"
    lines.append(f"include {include}; exclude {exclude}")
    lines.append(
        f"cache_max_bytes {size(proxy.cache_max_bytes)},"
        f" max_cacheable_bytes {size(proxy.max_cacheable_bytes)},"
        f" upstream_timeout {_seconds(proxy.upstream_timeout)}"
    )
    if (proxy.cache_ttl, proxy.stale_while_revalidate, proxy.stale_if_error) != (None, None, None):
        lines.append(
            f"cache_ttl {_seconds(proxy.cache_ttl)},"
            f" stale_while_revalidate {_seconds(proxy.stale_while_revalidate)},"
            f" stale_if_error {_seconds(proxy.stale_if_error)}"
        )
    if proxy.proxy_mode == ProxyMode.PRE_GENERATE:
        fallthrough = "on" if proxy.pre_generate_fallthrough else "off"
        lines.append(
            f"snapshots {len(proxy.pre_generate_paths)} path(s),"
            f" fallthrough {fallthrough}, concurrency {proxy.pre_generate_concurrency}"
        )
    if proxy.webhooks:
        kinds = ", ".join(hook.type.value for hook in proxy.webhooks)
        lines.append(f"webhooks {len(proxy.webhooks)} ({kinds})")
    if proxy.execute:
        where = f" in {proxy.execute_dir}" if proxy.execute_dir else ""
        lines.append(f"origin command {proxy.execute!r}{where}")
    return lines


def summarize(config: Config) -> str:
    """
    Describe a configuration in a few lines.

    @param config: a valid configuration.
    @return: the listeners (with the certificate for HTTPS and whether the
        control site requires a token), the logging and shutdown settings,
        then one line per server (name, prefix, origin, proxy mode, cache
        policy, cache strategy, compression and storage) followed by
        indented lines: its include and exclude patterns, its size and time
        bounds, its freshness settings, snapshots, webhooks and origin
        command when it has them.
    """
    lines = []
    if config.source is not None:
        lines.append(f"{config.source}: OK")
    lines.append("Listeners:")
    lines.append(f"  http     {config.http_endpoint()}")
    https = config.https_port_endpoint()
    if https is not None:
        if config.acme is not None:
            names = ", ".join(config.acme.domains)
            source = f"ACME certificate for {names} from {config.acme.directory}"
        else:
            source = f"certificate {config.cert_path}"
        lines.append(f"  https    {https} ({source})")
    auth = "bearer token required" if config.control_auth else "no authentication"
    lines.append(f"  control  {config.control_endpoint()} ({auth})")
    access = "on" if config.access_log else "off"
    lines.append(
        f"Logging: access log {access}, format {config.log_format};"
        f" shutdown grace {config.shutdown_grace:g}s"
    )
    lines.append(f"Servers ({len(config.servers)}):")
    width = max((len(s.name) for s in config.servers), default=0)
    prefix_width = max((len(s.bind_to) for s in config.servers), default=0)
    for server in config.servers:
        proxy = server.proxy
        storage = proxy.cache_storage_mode.value
        if proxy.cache_directory is not None:
            storage = f"{storage} {proxy.cache_directory}"
        lines.append(
            f"  {server.name:<{width}}  {server.bind_to:<{prefix_width}} ->"
            f" {proxy.proxy_url}  (mode {proxy.proxy_mode.value},"
            f" policy {proxy.cache_policy.value},"
            f" cache {proxy.cache_strategy.value},"
            f" compress {proxy.compress_strategy.value}, storage {storage})"
        )
        lines.extend(f"      {detail}" for detail in _server_details(server))
    return "\n".join(lines)


def physical_memory() -> Optional[int]:
    """
    @return: this machine's memory in bytes (C{MemTotal} of
        C{/proc/meminfo}, else C{sysconf}), or L{None} when unknown.
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


_ENDPOINT_SPLIT = re.compile(r"(?<!\\):")


def _endpoint_interface(description: str) -> Tuple[str, Optional[str]]:
    """
    @param description: a server endpoint description.
    @return: its type, lower-cased, and its C{interface} argument
        (unescaped), or L{None} when it has none.
    """
    parts = _ENDPOINT_SPLIT.split(description)
    interface = None
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep and key == "interface":
            interface = re.sub(r"\\(.)", r"\1", value)
    return parts[0].lower(), interface


def _is_loopback(address: str) -> bool:
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _control_exposure(config: Config) -> Optional[str]:
    """
    @return: where the control site listens when that is beyond loopback,
        else L{None} (loopback, a UNIX socket, or an endpoint whose
        interface cannot be told, such as C{systemd:}).
    """
    if config.control_listen is None:
        address = config.control_bind_address
        return None if _is_loopback(address) else address
    kind, interface = _endpoint_interface(config.control_listen)
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    if interface is None:
        return "every interface"
    return None if _is_loopback(interface) else interface


def _personal_paths(server: ServerConfig) -> List[str]:
    """
    @return: the L{PERSONAL_PATHS} that C{server} would cache, as its
        include and exclude patterns stand.
    """
    proxy = server.proxy
    if proxy.cache_strategy == CacheStrategy.NONE:
        return []
    if proxy.proxy_mode == ProxyMode.PRE_GENERATE and not proxy.pre_generate_fallthrough:
        return []
    rules = RequestFilter(proxy.include_paths, proxy.exclude_paths)
    return [path for path in PERSONAL_PATHS if rules.bypass_reason("GET", path) is None]


def _ignores_cookies(server: ServerConfig) -> bool:
    """
    @return: whether C{server} caches answers to requests whatever their
        cookies (C{cookie_policy = "ignore"}); a server that caches nothing,
        or only pre-generated pages, does not.
    """
    proxy = server.proxy
    if proxy.cookie_policy != CookiePolicy.IGNORE or proxy.cache_strategy == CacheStrategy.NONE:
        return False
    return proxy.proxy_mode != ProxyMode.PRE_GENERATE or proxy.pre_generate_fallthrough


def risks(config: Config, total_memory: Callable[[], Optional[int]] = physical_memory) -> List[str]:
    """
    Find the settings of a valid configuration that are likely mistakes.

    @param config: the configuration.
    @param total_memory: returns the machine's memory in bytes, or L{None}
        when unknown.
    @return: one message per risk: a control site reachable beyond
        loopback without C{control_auth}; a server that caches paths that
        look personalised (L{PERSONAL_PATHS}); a caching server with
        C{cookie_policy = "ignore"}; the
        C{cache_max_bytes} of the memory-mode servers adding up to more
        than the machine's memory.
    """
    found = []
    exposed = _control_exposure(config)
    if exposed is not None and not config.control_auth:
        found.append(
            f"control site: listens on {exposed} without control_auth: anyone who can"
            " reach it can purge the cache and reload the configuration; set"
            " control_auth or listen on 127.0.0.1"
        )
    for server in config.servers:
        paths = _personal_paths(server)
        if paths:
            found.append(
                f"server.{server.name}: caches paths that look personalised"
                f" ({', '.join(paths)}); safe only if the origin marks those answers"
                " private (Cache-Control: private or no-store, Set-Cookie, Vary:"
                " Cookie), otherwise add them to exclude_paths (e.g."
                f" \"{paths[0]}\", \"{paths[0]}/*\")"
            )
        if _ignores_cookies(server):
            found.append(
                f"server.{server.name}: cookie_policy = \"ignore\": an answer the origin"
                " made from one visitor's cookies (a session) may be stored and served to"
                " every visitor unless it is marked private; prefer \"strict\", with"
                " ignore_cookies for cookies that never change an answer (\"_ga*\")"
            )
    in_memory: Dict[str, int] = {
        server.name: server.proxy.cache_max_bytes
        for server in config.servers
        if server.proxy.cache_storage_mode == CacheStorageMode.MEMORY
        and server.proxy.cache_strategy != CacheStrategy.NONE
    }
    total = sum(in_memory.values())
    memory = total_memory()
    if memory is not None and total > memory:
        each = ", ".join(f"{name} {size(limit)}" for name, limit in in_memory.items())
        found.append(
            f"cache_max_bytes: the memory-mode servers may hold {size(total)} together"
            f" ({each}), more than this machine's {size(memory)} of memory"
        )
    if config.redis_url is not None:
        from phantom_frame.config.redis_tier import eviction_warning

        warning = eviction_warning(config.redis_url)
        if warning is not None:
            found.append(warning)
    return found


def check(
    path: str,
    stdout: TextIO,
    stderr: TextIO,
    total_memory: Callable[[], Optional[int]] = physical_memory,
) -> int:
    """
    Validate a configuration file.

    @param path: the file.
    @param stdout: where the summary goes when the file is valid, followed
        by the numbered L{risks}, if any.
    @param stderr: where the numbered errors go when it is not.
    @param total_memory: see L{risks}.
    @return: 0 when valid (with or without warnings), 1 otherwise.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        stderr.write(f"{e}\n")
        return 1
    stdout.write(summarize(config) + "\n")
    found = risks(config, total_memory)
    if found:
        stdout.write(f"Warnings ({len(found)}):\n")
        for number, message in enumerate(found, 1):
            stdout.write(f"  {number}. {message}\n")
    return 0
