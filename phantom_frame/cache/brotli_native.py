"""
Brotli calls whose native state is freed when they return.

CPython's C{brotli} extension frees an encoder's state by reference
counting, as soon as the call ends. On PyPy the module is C{brotlicffi},
whose L{brotlicffi.Compressor} and C{Decompressor} free their state
(a compressor's ring buffer and hash tables: over a MiB at brotli's
default window) from a C{ffi.gc} finaliser, that is whenever the garbage
collector gets to the small Python object holding it. PyPy's collector
does not count that native memory: a process filling thousands of pages a
second held gigabytes of dead encoders. Here, with C{brotlicffi}, a body is
compressed in one shot by C{BrotliEncoderCompress} (no state outlives the
call) and a decompressor's state is released as soon as it is done.
"""

from __future__ import annotations

import threading
from typing import Any

try:
    import brotli

    CFFI = False
except ImportError:  # PyPy
    import brotlicffi as brotli  # type: ignore[no-redef]

    CFFI = True

__all__ = ["CFFI", "compress", "decompress", "release"]

_local = threading.local()


def compress(data: bytes, quality: int) -> bytes:
    """
    @return: C{data} compressed with brotli at C{quality} (generic mode,
        the default window).
    @raise brotli.error: when the encoder fails.
    """
    if not CFFI:
        return brotli.compress(data, quality=quality)
    return _compress_cffi(data, quality)


def _compress_cffi(data: bytes, quality: int) -> bytes:
    from brotlicffi._brotlicffi import ffi, lib

    # Brotli's own bound (BrotliEncoderMaxCompressedSize) is the input
    # and a few bytes per 16 MiB; this one is looser.
    bound = len(data) + (len(data) >> 4) + 1024
    out = getattr(_local, "out", None)
    if out is None or len(out) < bound:
        # One output buffer per thread, grown as needed, never given away.
        out = _local.out = ffi.new("uint8_t[]", max(bound, 65536))
        _local.size = ffi.new("size_t *")
    size = _local.size
    size[0] = len(out)
    if not lib.BrotliEncoderCompress(
        quality, lib.BROTLI_DEFAULT_WINDOW, lib.BROTLI_MODE_GENERIC, len(data), data, size, out
    ):
        raise brotli.error("brotli compression failed")
    return ffi.buffer(out, size[0])[:]


def decompress(data: bytes) -> bytes:
    """
    @return: the brotli stream C{data} decompressed.
    @raise brotli.error: for data that is not a whole brotli stream.
    """
    if not CFFI:
        return brotli.decompress(data)
    decompressor = brotli.Decompressor()
    try:
        out = decompressor.decompress(data)
        decompressor.finish()
        return out
    finally:
        release(decompressor)


def release(coder: Any) -> None:
    """
    Free the native state of a C{brotlicffi} compressor or decompressor now
    (it must not be used again); nothing for CPython's C{brotli}, whose
    objects free theirs when dropped.
    """
    if not CFFI:
        return
    from brotlicffi._brotlicffi import ffi

    for name in ("_encoder", "_decoder"):
        state = getattr(coder, name, None)
        if state is not None:
            ffi.release(state)
            setattr(coder, name, None)
