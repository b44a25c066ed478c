"""
phantom-frame: a prerendering, caching reverse proxy on Twisted.
"""

from phantom_frame._version import __version__
from phantom_frame.cache.keys import RequestInfo
from phantom_frame.embed import CacheHandle, create_proxy
from phantom_frame.proxy.settings import (
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
