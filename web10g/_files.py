"""Output files opened safely: the one way every web10g writer creates its output.

The tools run as root and are pointed at paths in shared directories (``recordwrite``
writes ``./test-record`` by default, wherever the shell happens to be). A plain
``open(path, "wb")`` follows a symbolic link another user planted there and truncates
whatever it points at (issue 12, defect 11). :func:`create_output` instead:

* never follows a symbolic link at the destination (``O_NOFOLLOW``, and it refuses an
  existing link with a message that says what to do);
* creates a new file with ``O_EXCL`` (a link or file planted between the check and the
  open makes it fail instead of being followed);
* replaces an existing regular file by writing a temporary file in the same directory
  (``O_EXCL | O_NOFOLLOW``, random name) and renaming it over the destination on
  :meth:`OutputFile.close`; a rename replaces a link planted meanwhile and never writes
  into another inode (so a planted hard link is not written through either). The new
  file is never more permissive than the one it replaces;
* refuses to write over anything else (directories, FIFOs, sockets, block devices),
  except character devices such as ``/dev/null``, which are written in place (only
  root can create them, so nobody can plant one).

Trade-off of the rename: while a writer runs, an existing destination keeps its old
contents (a ``tail -f`` of it sees the new file only once the writer closes it); a
writer that is killed leaves its temporary ``.NAME.XXXXXXXX.tmp`` file beside it.
"""
from __future__ import annotations

import errno
import io
import os
import secrets
import stat
from typing import Any

__all__ = ["UnsafeOutputError", "OutputFile", "create_output", "private_if_secret"]

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeOutputError(OSError):
    """An output path web10g will not write to: a symbolic link or a file that is not
    regular. ``filename`` is the path, ``strerror`` says why and what to do."""


class OutputFile(io.BufferedWriter):
    """A binary output file from :func:`create_output`. ``path`` is the destination.

    :meth:`close` completes it (renames the temporary file over the destination, when
    one was needed); :meth:`discard` abandons it (removes what was written, leaving an
    existing destination as it was), and so does leaving a ``with`` block by an
    exception.
    """

    def __init__(self, fd: int, path: str, tmp: str | None, created: bool) -> None:
        raw = io.FileIO(fd, "wb", closefd=True)
        raw.name = path  # type: ignore[misc]  # messages and repr name the destination
        super().__init__(raw)
        self.path = path
        self._tmp = tmp            # the temporary name, renamed over path on close
        self._created = created    # a new file we made at path (discard removes it)
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        except BaseException:
            self._remove()
            raise
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            try:
                os.rename(tmp, self.path)  # replaces a link planted meanwhile: never follows
            except OSError as exc:
                _unlink(tmp)
                raise UnsafeOutputError(
                    exc.errno or errno.EIO,
                    f"cannot put the finished file in place ({exc.strerror}); it was "
                    "written to a temporary file beside it, now removed; check the "
                    "directory and try again", self.path) from None

    def discard(self) -> None:
        """Close without completing: the output is removed; an existing file that would
        have been replaced is left as it was."""
        if self.closed:
            return
        try:
            super().close()
        except OSError:
            pass
        finally:
            self._remove()

    def _remove(self) -> None:
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            _unlink(tmp)
        elif self._created:
            self._created = False
            try:  # only if the name still is the file we created
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self.path)
            except OSError:
                pass

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.discard()
        else:
            self.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _refuse(path: str, st: os.stat_result) -> UnsafeOutputError:
    if stat.S_ISLNK(st.st_mode):
        return UnsafeOutputError(
            errno.ELOOP,
            "is a symbolic link; web10g does not write output through symbolic links "
            "(in a shared directory another user may have planted it): remove the link, "
            "or give the path of the file itself", path)
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
            "a FIFO" if stat.S_ISFIFO(st.st_mode) else
            "a socket" if stat.S_ISSOCK(st.st_mode) else
            "a block device" if stat.S_ISBLK(st.st_mode) else "not a regular file")
    return UnsafeOutputError(
        errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EEXIST,
        f"is {kind}; web10g writes over regular files only: give the path of a new or "
        "regular file", path)


def _temporary(path: str, mode: int) -> tuple[int, str]:
    head, base = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(head, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _NEW, mode), tmp
        except FileExistsError:
            continue
    raise UnsafeOutputError(errno.EEXIST, "cannot create a temporary file beside it "
                                          "(100 random names were taken)", path)


def private_if_secret(out: Any, columns: Any) -> bool:
    """Take every permission from others (mode & 0640) when ``columns`` include a
    sequence-number variable (mib.SEQUENCE_VARS): a root collector with the default
    umask would otherwise hand every local user what the ebpf backend withholds from
    them. The file's group keeps read access, so that a dataset directory with the
    setgid bit can share it with one group (as ``ebpf load --reader-group`` shares the
    reader). True when it did. Character devices (/dev/null) and streams are left
    alone."""
    from web10g.mib import SEQUENCE_VARS

    if not SEQUENCE_VARS.intersection(columns or ()):
        return False
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return False
    os.fchmod(fd, st.st_mode & 0o640)
    return True


def create_output(path: str | os.PathLike[str], *, overwrite: bool = True,
                  mode: int = 0o644, atomic: bool = False) -> OutputFile:
    """Open ``path`` for writing, safely (see the module docstring).

    ``overwrite=False`` refuses an existing file (``FileExistsError``). ``atomic=True``
    writes through a temporary file even when ``path`` does not exist yet, so the
    destination appears only complete. ``mode`` is for new files (the umask applies).
    Refusals raise :class:`UnsafeOutputError` (an ``OSError``) naming the path.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    for _ in range(10):  # each turn loses a race only to a file created meanwhile
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if atomic:
                fd, tmp = _temporary(path, mode)
                return OutputFile(fd, path, tmp, created=False)
            try:
                fd = os.open(path, _NEW, mode)
            except FileExistsError:
                continue  # something appeared since the lstat: look at it again
            return OutputFile(fd, path, None, created=True)
        if stat.S_ISREG(st.st_mode):
            if not overwrite:
                raise FileExistsError(errno.EEXIST, "already exists; give a new name or "
                                                    "remove it first", path)
            fd, tmp = _temporary(path, mode)
            try:  # never more permissive than the file it replaces
                os.fchmod(fd, os.fstat(fd).st_mode & st.st_mode & 0o777)
            except OSError:
                os.close(fd)
                _unlink(tmp)
                raise
            return OutputFile(fd, path, tmp, created=False)
        if stat.S_ISCHR(st.st_mode) and overwrite:  # /dev/null and the like: in place
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            if not stat.S_ISCHR(os.fstat(fd).st_mode):
                os.close(fd)
                continue
            return OutputFile(fd, path, None, created=False)
        raise _refuse(path, st)
    raise UnsafeOutputError(errno.EAGAIN, "kept changing while it was being created "
                                          "(another process is racing for the name)", path)
