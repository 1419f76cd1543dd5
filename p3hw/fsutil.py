"""Files the daemon writes while it runs: safely, privately, and without dying of a full disk.

One writer for every file p3hw rewrites (the ``--status-file``, and any other
small file that must never be seen half written or be redirected by a local
user):

* the new contents go to a fresh temporary name in the target's directory,
  opened ``O_CREAT | O_EXCL | O_NOFOLLOW``: a symlink or file planted at a
  predictable name (``STATUS.tmp``) is never followed or truncated, as root;
* mode 0640 (the caller may choose tighter), group of the admin socket when
  asked, so an operator in the admin group reads it and nobody else does;
* ``fsync``, then ``rename`` over the target: a reader sees the old file or
  the new one, never a torn one, and a symlink at the target is replaced,
  not followed.

A failure (full or read-only file system, no permission, a directory in the
way) is returned as a reason-coded :class:`~p3hw.reasons.P3Error`, never
raised: the caller decides, and :class:`FailureLog` logs it once per streak of
failures rather than once per write (issue 16: the tunnel keeps running).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets

from p3hw.log import failure
from p3hw.reasons import P3Error

#: Owner reads and writes, the admin group reads, nobody else (docs/status.md).
PRIVATE_FILE_MODE = 0o640
#: A temporary name is random; after this many collisions something is planting files.
TEMP_NAME_ATTEMPTS = 8

_HINTS = {
    errno.ENOSPC: "free space on that file system; the daemon writes it again when it can",
    errno.EDQUOT: "raise the quota or free space; the daemon writes it again when it can",
    errno.EROFS: "the file system is read-only: remount it read-write or choose another path",
    errno.EACCES: "the daemon may not write in that directory: choose another path or fix its permissions",
    errno.EPERM: "the daemon may not write in that directory: choose another path or fix its permissions",
    errno.ENOENT: "the directory does not exist: create it or choose another path",
    errno.ENOTDIR: "a part of the path is not a directory: choose another path",
    errno.ELOOP: "a symbolic link is in the way of the temporary file: remove it",
}


def write_error(path: str, exc: OSError, what: str = "file") -> P3Error:
    """The reason-coded form of an OSError met while writing ``path``."""
    hint = _HINTS.get(exc.errno or 0, "see the file system's state")
    return P3Error("FILE_WRITE", f"cannot write the {what} {path}: {exc.strerror or exc}", hint)


def group_of(path: str | None) -> int | None:
    """The group that owns ``path`` (the admin socket), or None when it does not exist."""
    if path is None:
        return None
    try:
        return os.stat(path).st_gid
    except OSError:
        return None


def write_private_file(path: str, data: bytes, *, mode: int = PRIVATE_FILE_MODE, group: int | None = None,
                       what: str = "file", sync_directory: bool = False) -> P3Error | None:
    """Replace ``path`` with ``data`` atomically; None when done, else the reason-coded failure.

    ``group`` is a gid given to the file (e.g. :func:`group_of` the admin
    socket). ``sync_directory`` also makes the rename durable (a configuration
    file); a file rewritten twice a second (the status) does without.
    """
    target = os.path.abspath(path)
    directory, name = os.path.split(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    temp = ""
    fd = -1
    try:
        for _ in range(TEMP_NAME_ATTEMPTS):
            temp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(temp, flags, mode)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name", temp)
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away; never more than asked
            if group is not None:
                os.fchown(fd, -1, group)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        temp = ""
        if sync_directory:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        return write_error(path, exc, what)
    finally:
        if temp and fd >= 0:
            try:
                os.unlink(temp)
            except OSError:
                pass
    return None


class FailureLog:
    """Logs a write that keeps failing once, and once again when it works again.

    A status file is rewritten twice a second and an audit record is written
    per request: a full disk must give one line with its reason code, not
    thousands, and an operator must learn when the file is current again.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        #: writes lost since the current streak of failures began (0: the last write worked)
        self.failed_writes = 0

    @property
    def failing(self) -> bool:
        return self.failed_writes > 0

    def failed(self, error: P3Error) -> None:
        if self.failed_writes == 0:
            failure(self.logger, error.reason.name, f"{error.detail} (hint: {error.hint}); running on, "
                    f"retrying; the next line about it says when it is written again", logging.WARNING)
        self.failed_writes += 1

    def succeeded(self) -> None:
        if self.failed_writes:
            self.logger.info("%s written again after %d failed attempt(s)", self.what, self.failed_writes)
        self.failed_writes = 0

    def record(self, error: P3Error | None) -> bool:
        """Log the outcome of one write (None: it worked); True when it worked."""
        if error is None:
            self.succeeded()
            return True
        self.failed(error)
        return False


class StatusFileWriter:
    """The ``--status-file``: private, atomic, and logged once when it cannot be written."""

    def __init__(self, path: str, logger: logging.Logger, *, group_from: str | None = None) -> None:
        self.path = path
        #: the file whose group the status file takes (the admin socket)
        self.group_from = group_from
        self.failures = FailureLog(logger, f"status file {path}")

    def write(self, data: bytes) -> bool:
        error = write_private_file(self.path, data, group=group_of(self.group_from), what="status file")
        return self.failures.record(error)


__all__ = ["PRIVATE_FILE_MODE", "FailureLog", "StatusFileWriter", "group_of", "write_error", "write_private_file"]
