"""
The C{phantom-frame} command: C{phantom-frame check FILE} validates a
configuration file with the same validator as the twistd plugin.
"""

from __future__ import annotations

import sys
from typing import List, Optional, TextIO

from phantom_frame._version import __version__
from phantom_frame.config import Config, ConfigError, load_config

USAGE = """\
Usage: phantom-frame check FILE
       phantom-frame --version
       phantom-frame --help

Commands:
  check FILE   validate a configuration file: print every error, numbered,
               or a summary of the listeners and servers

Exit status: 0 when the file is valid, 1 when it is not, 2 on a usage error.
Run the proxy with: twistd -n phantom-frame --config FILE
"""
"""
The command's help text.
"""


def summarize(config: Config) -> str:
    """
    Describe a configuration in a few lines.

    @param config: a valid configuration.
    @return: the listeners (with the certificate for HTTPS and whether the
        control site requires a token), then one line per server: name,
        prefix, origin, proxy mode, cache policy, cache strategy, compression
        and storage.
    """
    lines = []
    if config.source is not None:
        lines.append(f"{config.source}: OK")
    lines.append("Listeners:")
    lines.append(f"  http     {config.http_endpoint()}")
    https = config.https_port_endpoint()
    if https is not None:
        lines.append(f"  https    {https} (certificate {config.cert_path})")
    auth = "bearer token required" if config.control_auth else "no authentication"
    lines.append(f"  control  {config.control_endpoint()} ({auth})")
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
    return "\n".join(lines)


def _usage_error(message: str, stderr: TextIO) -> int:
    """
    @param message: what is wrong with the command line.
    @param stderr: where to print it, with the usage.
    @return: 2, the exit status of a usage error.
    """
    stderr.write(f"phantom-frame: {message}\n\n{USAGE}")
    return 2


def check(path: str, stdout: TextIO, stderr: TextIO) -> int:
    """
    Validate a configuration file.

    @param path: the file.
    @param stdout: where the summary goes when the file is valid.
    @param stderr: where the numbered errors go when it is not.
    @return: 0 when valid, 1 otherwise.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        stderr.write(f"{e}\n")
        return 1
    stdout.write(summarize(config) + "\n")
    return 0


def main(
    argv: Optional[List[str]] = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """
    Run the C{phantom-frame} command; the console script exits with the
    returned status.

    @param argv: the arguments after the program name; C{sys.argv[1:]} by
        default.
    @param stdout: the output stream; C{sys.stdout} by default.
    @param stderr: the error stream; C{sys.stderr} by default.
    @return: the exit status: 0 success, 1 invalid configuration, 2 usage
        error.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    if not args:
        return _usage_error("a command is required", err)
    command, rest = args[0], args[1:]
    if command in ("-h", "--help", "help"):
        out.write(USAGE)
        return 0
    if command in ("-V", "--version"):
        out.write(f"phantom-frame {__version__}\n")
        return 0
    if command != "check":
        return _usage_error(f"unknown command {command!r}", err)
    if rest and rest[0] in ("-h", "--help"):
        out.write(USAGE)
        return 0
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if not rest:
        return _usage_error("check: the configuration FILE is missing", err)
    if len(rest) > 1:
        return _usage_error(f"check: unexpected arguments {rest[1:]!r}", err)
    return check(rest[0], out, err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
