"""
The per-server choices the cache itself acts on: which responses it may
store (L{CacheStrategy}) and how it compresses them (L{CompressStrategy}).
"""

from __future__ import annotations

import enum
from typing import Tuple


class Choice(str, enum.Enum):
    """
    An enum whose values are the strings used in the config file.
    """

    def __str__(self) -> str:
        return self.value

    @classmethod
    def choices(cls) -> Tuple[str, ...]:
        """
        @return: every accepted spelling, in declaration order.
        """
        return tuple(member.value for member in cls)


class CacheStrategy(Choice):
    """
    Which responses, by media type, may be stored.
    """

    ALL = "all"
    NONE = "none"
    ONLY_HTML = "only_html"
    NO_IMAGES = "no_images"
    ONLY_IMAGES = "only_images"
    ONLY_ASSETS = "only_assets"


class CompressStrategy(Choice):
    """
    How stored bodies are compressed.
    """

    NONE = "none"
    BROTLI = "brotli"
    GZIP = "gzip"
    DEFLATE = "deflate"
