"""
The configuration file: TOML read into a frozen, validated L{Config}.

L{load_config} reads and checks a file (every error names its key path);
L{Config} holds the globals and one L{ServerConfig} per C{[server.NAME]}
block; L{ConfigError} carries every error found.
"""

from phantom_frame.config.loader import (
    Config,
    ConfigError,
    ServerConfig,
    load_config,
    parse_size,
)

__all__ = ["Config", "ConfigError", "ServerConfig", "load_config", "parse_size"]
