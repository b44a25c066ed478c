"""
Routes that are not proxied: C{[static.NAME]} blocks (L{StaticFiles}, files
under a directory served with twisted.web's C{static.File}) and
C{[redirect.NAME]} blocks (L{Redirect}). Both are resources the
L{phantom_frame.http.routing.Router} mounts at their C{bind_to} prefix, as
it mounts servers; neither has a C{proxy_server}, so the HTTP/1.1 channel's
fast path leaves their requests to twisted.web.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Tuple

import attr
from twisted.web.resource import Resource

from phantom_frame.proxy.answers import error_response, split_target

__all__ = [
    "REDIRECT_STATUSES",
    "Redirect",
    "RedirectConfig",
    "StaticConfig",
    "StaticFiles",
    "redirect_location",
]

#: The statuses a C{[redirect.NAME]} block may answer with.
REDIRECT_STATUSES = (301, 302, 307, 308)

_ALLOW = ((b"allow", b"GET, HEAD"),)

_PHRASES = {
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
}


@attr.s(auto_attribs=True, frozen=True)
class StaticConfig:
    """
    One C{[static.NAME]} block.

    @ivar name: the block's NAME.
    @ivar bind_to: C{"*"} or the path prefix the files are served at.
    @ivar root: the absolute path of the directory served.
    @ivar index: the file answering for a directory.
    """

    name: str
    bind_to: str
    root: str
    index: str = "index.html"

    def resource(self) -> StaticFiles:
        """
        @return: the resource serving this block's files.
        """
        return StaticFiles(self.root, self.index)


@attr.s(auto_attribs=True, frozen=True)
class RedirectConfig:
    """
    One C{[redirect.NAME]} block.

    @ivar name: the block's NAME.
    @ivar bind_to: C{"*"} or the path prefix redirected.
    @ivar to: an absolute C{http(s)://} URL or a path starting with C{/}.
    @ivar status: one of L{REDIRECT_STATUSES}.
    """

    name: str
    bind_to: str
    to: str
    status: int = 308

    def resource(self) -> Redirect:
        """
        @return: the resource answering this block's redirects.
        """
        return Redirect(self.to, self.status)


def _file(path: str) -> Any:
    """
    @return: a twisted.web L{static.File} for C{path}.
    """
    with warnings.catch_warnings():
        # Importing twisted.web.static builds its deprecated error pages.
        warnings.simplefilter("ignore", DeprecationWarning)
        from twisted.web import static
    return static.File(path)


def _unsafe(segment: bytes) -> bool:
    """
    @param segment: an unquoted path segment.
    @return: whether it could name something outside its directory (C{.},
        C{..}, a C{/} or C{\\} that was percent-encoded, a NUL).
    """
    return segment in (b".", b"..") or b"/" in segment or b"\\" in segment or b"\x00" in segment


class StaticFiles(Resource):
    """
    Serves the files under a directory: C{GET} and C{HEAD} only, with
    C{Last-Modified}, a strong C{ETag} (size and modification time, as
    nginx makes it), C{Range} and C{304} answers to C{If-None-Match} and
    C{If-Modified-Since}; a directory answers with its index file (a
    directory without one is 404: there are no listings); a directory
    asked for without its trailing slash is redirected (301) to it.

    Nothing outside the root is served: C{.} and C{..} segments, in any
    spelling (the request's segments are percent-decoded before they are
    looked at), encoded slashes and NULs are 404, and so is anything whose
    real path (symbolic links resolved) is not under the root's.
    """

    isLeaf = True

    def __init__(self, root: str, index: str = "index.html") -> None:
        """
        @param root: the directory served.
        @param index: the file answering for a directory.
        """
        super().__init__()
        self.root = os.path.abspath(root)
        self.index = index

    def _within(self, path: str) -> bool:
        """
        @return: whether C{path}, symbolic links resolved, is the root or
            under it.
        """
        real = os.path.realpath(path)
        root = os.path.realpath(self.root)
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    def locate(self, segments: Any) -> Tuple[Optional[str], bool]:
        """
        @param segments: the request's unquoted path segments after the
            prefix (C{postpath}).
        @return: the file to serve (or L{None} for 404), and whether the
            request names a directory without its trailing slash.
        """
        names = [os.fsdecode(s) for s in segments if s]
        if any(_unsafe(s) for s in segments):
            return None, False
        path = os.path.join(self.root, *names)
        if not self._within(path):
            return None, False
        if os.path.isdir(path):
            if not segments or segments[-1] != b"":
                return path, True
            path = os.path.join(path, self.index)
            if not self._within(path):
                return None, False
        if not os.path.isfile(path):
            return None, False
        return path, False

    def render(self, request: Any) -> object:
        """
        Serve the file the rest of the path names.
        """
        if request.method not in (b"GET", b"HEAD"):
            return error_response(request, 405, "Method Not Allowed", _ALLOW)
        path, directory = self.locate(request.postpath)
        if path is None:
            return error_response(request, 404, "Not Found")
        if directory:
            location = _with_slash(request)
            return _redirect(request, 301, location)
        file = _file(path)
        try:
            stat = os.stat(path)
        except OSError:
            return error_response(request, 404, "Not Found")
        etag = b'"%x-%x"' % (int(stat.st_mtime), stat.st_size)
        headers = request.requestHeaders
        if headers.hasHeader(b"if-none-match"):
            # RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since.
            headers.removeHeader(b"if-modified-since")
        if request.setETag(etag):
            return b""
        return file.render(request)


def _with_slash(request: Any) -> bytes:
    """
    @return: the request's path with a C{/} added, and its query.
    """
    path, _, query = request.uri.partition(b"?")
    return path + b"/" + (b"?" + query if query else b"")


def _redirect(request: Any, code: int, location: bytes) -> bytes:
    """
    Answer C{code} with C{Location: location} and a short text body.

    @return: the body.
    """
    request.setHeader(b"location", location)
    return error_response(request, code, f"{_PHRASES[code]}: {location.decode('latin-1')}")


def redirect_location(to: str, rest: bytes, query: bytes) -> bytes:
    """
    @param to: a C{[redirect.NAME]} block's C{to}.
    @param rest: the raw path after the block's prefix (C{b""} when the
        request named the prefix alone).
    @param query: the request's raw query, without C{?}.
    @return: the C{Location}: C{to} followed by C{rest} (one slash where
        both meet) and the query (after C{&} when C{to} has one already).
    """
    target = to.encode("utf-8")
    base, mark, own_query = target.partition(b"?")
    if rest:
        if base.endswith(b"/") and rest.startswith(b"/"):
            rest = rest[1:]
        base += rest
    if mark:
        base += b"?" + own_query
        if query:
            base += b"&" + query
    elif query:
        base += b"?" + query
    return base


class Redirect(Resource):
    """
    Answers every request with a redirect to C{to} followed by the rest of
    the path after the prefix and the query (see L{redirect_location}).
    """

    isLeaf = True

    def __init__(self, to: str, status: int = 308) -> None:
        """
        @param to: an absolute URL or a path starting with C{/}.
        @param status: one of L{REDIRECT_STATUSES}.
        @raise ValueError: for another status.
        """
        super().__init__()
        if status not in REDIRECT_STATUSES:
            raise ValueError(f"a redirect status is one of {REDIRECT_STATUSES}, got {status!r}")
        self.to = to
        self.status = status

    def render(self, request: Any) -> object:
        """
        Redirect the request.
        """
        target = getattr(request, "phantomTarget", None) or split_target(request)
        if target is None:
            return error_response(request, 400, "Bad Request: malformed request target")
        raw_path, query = target
        rest = raw_path
        consumed = len(request.prepath)
        if consumed:
            after = raw_path.split(b"/")[1 + consumed :]
            rest = b"/" + b"/".join(after) if after else b""
        return _redirect(request, self.status, redirect_location(self.to, rest, query))
