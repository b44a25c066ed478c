"""
phantom-frame: a prerendering, caching reverse proxy on Twisted.
"""

from ._version import __version__
from .cache.keys import RequestInfo
from .library import CacheHandle, create_proxy
from .proxyconfig import (
    CachePolicy,
    CacheStorageMode,
    CacheStrategy,
    CompressStrategy,
    CreateProxyConfig,
    ProxyMode,
    Webhook,
    WebhookType,
)

__all__ = [
    "__version__",
    "CacheHandle",
    "CachePolicy",
    "CacheStorageMode",
    "CacheStrategy",
    "CompressStrategy",
    "CreateProxyConfig",
    "ProxyMode",
    "RequestInfo",
    "Webhook",
    "WebhookType",
    "create_proxy",
]
