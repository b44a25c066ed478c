"""
Where stored bodies live: in memory, or in files of a per-server bucket.

Metadata always stays in memory (see L{phantom_frame.cache.responses}); a
store only holds the bytes of bodies, addressed by the L{StoredBody} it
returns.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from typing import Callable, Dict, Optional, Set

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

_BUCKET = re.compile(r"[A-Za-z0-9_-]+")
_TEMP_PREFIX = ".tmp-"
_ENTRY = re.compile(r"[0-9a-f]{64}-(?:[0-9a-f]{8}-)?[0-9]+")


@attr.s(slots=True)
class StoredBody:
    """
    A body held by a store.

    @ivar size: its length in bytes.
    @ivar data: the bytes, when held in memory (memory mode, or the fallback
        after a failed write).
    @ivar path: the file holding it, in filesystem mode.
    """

    size: int = attr.ib()
    data: Optional[bytes] = attr.ib(default=None, repr=False)
    path: Optional[str] = attr.ib(default=None)


class MemoryStore:
    """
    Keeps bodies in process memory.
    """

    def open(self) -> None:
        """
        Nothing to prepare.
        """

    def close(self) -> None:
        """
        Nothing to release.
        """

    def put(self, name: str, body: bytes) -> Deferred[StoredBody]:
        """
        Hold a body.

        @param name: the cache key it belongs to (unused).
        @param body: the bytes.
        @return: an already fired L{Deferred} with the L{StoredBody}.
        """
        return succeed(StoredBody(len(body), body, None))

    def put_now(self, name: str, body: bytes) -> StoredBody:
        """
        L{put}, without a L{Deferred}: a body in memory is held at once.

        @return: the L{StoredBody}.
        """
        return StoredBody(len(body), body, None)

    def read(self, stored: StoredBody) -> Deferred[bytes]:
        """
        Give back a body.

        @param stored: what L{put} returned.
        @return: an already fired L{Deferred} with the bytes.
        """
        return succeed(stored.data)

    def delete(self, stored: StoredBody) -> None:
        """
        Forget a body: nothing to do, the garbage collector frees it once no
        reader holds it.

        @param stored: what L{put} returned.
        """


def _write(bucket: str, final: str, body: bytes) -> None:
    """
    Write a file atomically: to a temporary file in the same directory, then
    renamed over C{final}. Runs in the runner.
    """
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=bucket)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(temp, final)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _read(path: str) -> bytes:
    """
    Read a whole file. Runs in the runner.
    """
    with open(path, "rb") as f:
        return f.read()


def _unlink(path: str) -> None:
    """
    Remove a file that may already be gone. Runs in the runner.
    """
    try:
        os.unlink(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


class FilesystemStore:
    """
    Keeps bodies in files of one bucket, C{directory/bucket}.

    File names are a SHA-256 hash of the cache key and a counter, so no
    request data ever reaches a path, and a new body for a key never races
    with the removal of the old one. Writes are atomic (temporary file, then
    rename). When a write fails, the body is kept in memory and a warning
    logged: storing never fails. A file is removed only once the reads of it
    already under way are done.
    """

    def __init__(
        self, directory: str, bucket: str, runner: Callable[..., Deferred]
    ) -> None:
        """
        @param directory: the C{cache_directory}.
        @param bucket: the server's name, which names its subdirectory;
            letters, digits, C{_} and C{-} only.
        @param runner: runs file I/O, C{runner(f, *args) -> Deferred}
            (see L{phantom_frame.cache.threads}).
        @raise ValueError: when C{bucket} is not a plain name.
        """
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(
                f"bucket {bucket!r}: expected letters, digits, _ and - only"
            )
        self.path = os.path.join(directory, bucket)
        self._runner = runner
        self._counter = 0
        # Unique per store: a store built on the same bucket after a reload
        # never reuses a name an older store may still delete late.
        self._token = os.urandom(4).hex()
        self._reading: Dict[str, int] = {}
        self._doomed: Set[str] = set()
        self._open = False

    def open(self) -> None:
        """
        Create the bucket and empty it of the files a previous run left.

        Only files this store names (hashed entries and temporary files) are
        removed, so a misconfigured C{cache_directory} cannot cost anyone
        their own files; anything else is left alone and logged.

        @raise OSError: when the bucket cannot be created or listed.
        """
        os.makedirs(self.path, exist_ok=True)
        foreign = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                ours = _ENTRY.fullmatch(entry.name) or entry.name.startswith(
                    _TEMP_PREFIX
                )
                if not ours or entry.is_dir(follow_symlinks=False):
                    foreign.append(entry.name)
                    continue
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
        if foreign:
            log.warn(
                "Cache bucket {path} holds {count} entries it did not write; "
                "leaving them alone",
                path=self.path,
                count=len(foreign),
            )
        self._open = True

    def close(self) -> None:
        """
        Stop using the bucket; its files are removed by the next L{open}.
        """
        self._open = False

    def _filename(self, name: str) -> str:
        """
        A new file name for a key: its hash and the next counter value.
        """
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        self._counter += 1
        return os.path.join(self.path, f"{digest}-{self._token}-{self._counter}")

    def put(self, name: str, body: bytes) -> Deferred[StoredBody]:
        """
        Store a body in a file of its own.

        @param name: the cache key it belongs to; only its hash is used.
        @param body: the bytes.
        @return: a L{Deferred} firing with the L{StoredBody}: with a C{path},
            or with the C{data} in memory when the write failed (a warning is
            logged). It never fails.
        """
        final = self._filename(name)
        size = len(body)

        def written(_: object) -> StoredBody:
            return StoredBody(size, None, final)

        def failed(failure: Failure) -> StoredBody:
            if failure.check(OSError):
                log.warn(
                    "Cannot write the cache file for {key!r}, keeping it in "
                    "memory: {error}",
                    key=name,
                    error=failure.value,
                )
            else:
                log.failure(
                    "Cannot write the cache file for {key!r}, keeping it in memory",
                    failure,
                    key=name,
                )
            return StoredBody(size, body, None)

        return self._runner(_write, self.path, final, body).addCallbacks(
            written, failed
        )

    def read(self, stored: StoredBody) -> Deferred[bytes]:
        """
        Read a body back.

        @param stored: what L{put} returned.
        @return: a L{Deferred} firing with the bytes (at once when they are
            in memory), or failing with L{OSError} when the file cannot be
            read.
        """
        if stored.data is not None or stored.path is None:
            return succeed(stored.data if stored.data is not None else b"")
        path = stored.path
        self._reading[path] = self._reading.get(path, 0) + 1

        def done(result: object) -> object:
            count = self._reading.pop(path) - 1
            if count:
                self._reading[path] = count
            elif path in self._doomed:
                self._doomed.discard(path)
                self._unlink(path)
            return result

        return self._runner(_read, path).addBoth(done)

    def delete(self, stored: StoredBody) -> None:
        """
        Remove a body's file, once the reads of it under way are done. A
        file already gone is not an error; other errors are logged, never
        raised.

        @param stored: what L{put} returned.
        """
        path = stored.path
        if path is None:
            return
        if path in self._reading:
            self._doomed.add(path)
        else:
            self._unlink(path)

    def _unlink(self, path: str) -> None:
        """
        Remove a file in the runner, logging (not raising) errors.
        """

        def failed(failure: Failure) -> None:
            log.warn(
                "Cannot remove the cache file {path}: {error}",
                path=path,
                error=failure.value,
            )

        self._runner(_unlink, path).addErrback(failed)
