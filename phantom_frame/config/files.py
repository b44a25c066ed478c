"""
Checking the files and directories a configuration names, the way the
running proxy will use them: the HTTPS certificate and key are loaded as
the HTTPS listener loads them (L{tls_problem}), and a cache directory must
be creatable (L{directory_problem}).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from phantom_frame.http.tls import TLSConfigError, load_server_context

__all__ = ["directory_problem", "tls_problem", "unreadable"]


def unreadable(path: str) -> Optional[str]:
    """
    @param path: a file.
    @return: why it cannot be opened for reading (C{"No such file or
        directory"}), or L{None} when it can.
    """
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def tls_problem(cert_path: str, key_path: str) -> Optional[Tuple[str, str]]:
    """
    Load a certificate chain and its key as the HTTPS listener does
    (L{phantom_frame.http.tls.load_server_context}).

    @param cert_path: the PEM certificate chain.
    @param key_path: the PEM private key.
    @return: the key at fault (C{cert_path} or C{key_path}) and what is
        wrong (not PEM, not a certificate, the key does not match), or
        L{None} when the pair loads.
    """
    try:
        load_server_context(cert_path, key_path)
    except TLSConfigError as e:
        return e.key, e.reason
    return None


def directory_problem(path: str) -> Optional[str]:
    """
    @param path: an absolute directory that is created when missing.
    @return: why it cannot be a directory (it, or the nearest of its
        parents that exists, is not a directory), or L{None}.
    """
    existing = path
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            return None
        existing = parent
    if os.path.isdir(existing):
        return None
    if existing == path:
        return f"{path!r} exists and is not a directory"
    return f"cannot create {path!r}: {existing!r} is not a directory"
