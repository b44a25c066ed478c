"""
The configuration file: TOML read into a frozen, validated L{Config}.

L{load_config} reads and checks a file (every error names its key path);
L{parse_config} checks tables already read; L{Config} holds the globals and
one L{ServerConfig} per C{[server.NAME]} block; L{ConfigError} carries every
error found; L{parse_size} reads sizes such as C{"256MiB"}.

The modules inside are C{loader} (the above), C{schema} (the keys and the
rules between them), C{tables} (walking tables, C{$env:} references),
C{values} and C{network} (single values), C{files} (the certificate, key
and cache directories named), C{dotenv} (C{.env} files) and C{check} (the
C{phantom-frame check} command).
"""

from phantom_frame.config.loader import (
    Config,
    ConfigError,
    ServerConfig,
    load_config,
    parse_config,
    parse_size,
)

__all__ = [
    "Config",
    "ConfigError",
    "ServerConfig",
    "load_config",
    "parse_config",
    "parse_size",
]
