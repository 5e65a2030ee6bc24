"""A local (or mounted) gateway folder with the same interface as :class:`im1.transport.sftp.SftpClient`.

TPP delivers SystmOne extracts into a folder (the TPP gateway client writes them there); the
ingest pipeline lists and copies from it exactly as it would from an SFTP site: ``walk`` lists
regular files recursively, ``download`` copies atomically (``<name>.part`` first, size checked,
then renamed) and resumes a partial copy, ``read_bytes`` reads a small file (the manifest).
Paths are POSIX-style and absolute, like remote paths.

Whoever can write into the gateway chooses what lies there, and can swap a file between the
listing and the copy. So the gateway is read without following links: every folder below the
gateway root and every file is opened relative to its parent with ``O_NOFOLLOW`` (a symbolic link
anywhere below the root is refused, not followed), a file is opened with ``O_NONBLOCK`` (a FIFO
cannot make the copy wait for ever) and checked with ``fstat`` to be a regular file of the listed
size before a byte is read. A refused file raises :class:`~im1.transport.sftp.RefusedFileError`
(its batch is quarantined).
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from im1.transport.sftp import CHUNK, DownloadSizeError, RefusedFileError, RemoteFile, SftpError, kind_of

log = logging.getLogger(__name__)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DEPTH = 32  # folders below the gateway root (TPP writes one or two)


class GatewayError(SftpError):
    """The gateway folder cannot be read."""


_WHY = "the gateway must hold plain files and folders, and nothing in it is read through a link"


def _refused(name: str, kind: str) -> RefusedFileError:
    return RefusedFileError(f"{name} is a {kind}, not a regular file: refused ({_WHY})")


def _refused_folder(path: str, kind: str) -> RefusedFileError:
    return RefusedFileError(f"folder {path} is a {kind} now: refused ({_WHY})")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # bytes that are not UTF-8 come from the file system as surrogates
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str) -> str:
    """A path as text that can be logged and recorded (bytes that are not UTF-8 as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class FolderClient:
    """A gateway folder on this machine. Use as a context manager (nothing to open or close).

    ``root`` is the gateway folder (it may itself be a link, e.g. a mount point); files are read
    without following any link below it. Without ``root``, the folder last walked is the root; if
    none was walked either, no link anywhere on a file's path is followed.
    """

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root else None
        self._walked: str | None = None

    def __enter__(self) -> FolderClient:
        return self

    def __exit__(self, *exc) -> None:
        pass

    # -- listing -----------------------------------------------------------------------------------
    def walk(self, root: str | Path, *, special: bool = False) -> Iterator[RemoteFile]:
        """Every regular file under ``root``, recursively, in sorted order (hidden files skipped).

        Symbolic links are never followed (a linked folder is not walked into). With ``special``,
        entries that are neither regular files nor folders (links, FIFOs, ...) are listed too, with
        their ``kind``, so that a caller can refuse them by name.
        """
        top = Path(root)
        try:
            fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise GatewayError(f"gateway folder {str(top)!r} does not exist or is not a folder") from None
        except PermissionError as err:
            raise GatewayError(f"cannot list gateway folder {str(top)!r}: {err}") from None
        self._walked = top.as_posix()
        stack = [(fd, top.as_posix(), iter(self._entries(fd, top.as_posix())))]
        try:
            while stack:
                fd, path, entries = stack[-1]
                item = next(entries, None)
                if item is None:
                    os.close(fd)
                    stack.pop()
                    continue
                name, st = item
                p = posixpath.join(path, name)
                if _utf8(name) and stat.S_ISDIR(st.st_mode) and len(stack) <= MAX_DEPTH:
                    child = self._subfolder(fd, name, p)
                    if child is not None:
                        stack.append((child, p, iter(self._entries(child, p))))
                    continue
                listed = self._listed(p, st)
                if listed.kind == "file" or special:
                    yield listed
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    @staticmethod
    def _listed(path: str, st: os.stat_result) -> RemoteFile:
        """A listed entry that is not walked into: a regular file, or what else it is (never read)."""
        if not _utf8(path):  # cannot be recorded or shown as it is
            what = "folder" if stat.S_ISDIR(st.st_mode) else "file"
            log.warning("%s: a %s whose name is not valid UTF-8; not read", shown(path), what)
            return RemoteFile(shown(path), int(st.st_size), int(st.st_mtime), kind=f"{what} whose name is not "
                              "valid UTF-8")
        if stat.S_ISDIR(st.st_mode):
            log.warning("%s: more than %d folders deep in the gateway; not listed", path, MAX_DEPTH)
            return RemoteFile(path, 0, int(st.st_mtime), kind=f"folder more than {MAX_DEPTH} levels deep")
        return RemoteFile(path, int(st.st_size), int(st.st_mtime), kind=kind_of(st.st_mode))

    @staticmethod
    def _entries(fd: int, path: str) -> list[tuple[str, os.stat_result]]:
        """The folder's entries (not hidden) with their own status (links not followed), by name."""
        out = []
        try:
            with os.scandir(fd) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    try:
                        out.append((e.name, e.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue  # removed while listing
        except PermissionError as err:
            raise GatewayError(f"cannot list gateway folder {path!r}: {err}") from None
        return sorted(out, key=lambda x: x[0])

    @staticmethod
    def _subfolder(fd: int, name: str, path: str) -> int | None:
        """The listed folder ``name`` opened below ``fd`` without following a link (None: skipped)."""
        try:
            return os.open(name, _DIR, dir_fd=fd)
        except FileNotFoundError:
            return None  # removed while listing
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                log.warning("%s: replaced by a link or a file while listing; not walked into", path)
                return None
            raise GatewayError(f"cannot list gateway folder {path!r}: {err}") from None

    # -- reading -----------------------------------------------------------------------------------
    def _root_for(self, path: str) -> str:
        for root in (self.root.as_posix() if self.root else None, self._walked):
            if root and (path == root or path.startswith(root.rstrip("/") + "/")):
                return root
        return "/"

    def _open_regular(self, path: str) -> tuple[int, os.stat_result]:
        """An fd of the regular file at ``path``, reached from the gateway root one folder at a time
        without following a link, and its ``fstat``; raises RefusedFileError for anything else."""
        root = self._root_for(path)
        parts = [p for p in posixpath.relpath(path, root).split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise GatewayError(f"{path} is not a file in the gateway folder {root}")
        name = parts[-1]
        try:
            dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise GatewayError(f"gateway folder {root!r} does not exist") from None
        try:
            for i, part in enumerate(parts[:-1]):
                nfd = self._open_at(dfd, part, _DIR, posixpath.join(root, *parts[: i + 1]))
                os.close(dfd)
                dfd = nfd
            fd = self._open_at(dfd, name, _FILE, path)
        finally:
            os.close(dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise _refused(name, kind_of(st.st_mode))
        if st.st_nlink > 1:  # a hard link: the same file is also elsewhere, possibly outside the gateway
            os.close(fd)
            raise _refused(name, f"hard link ({st.st_nlink} names for one file)")
        os.set_blocking(fd, True)
        return fd, st

    @staticmethod
    def _open_at(dfd: int, name: str, flags: int, path: str) -> int:
        try:
            return os.open(name, flags, dir_fd=dfd)
        except FileNotFoundError:
            raise GatewayError(f"{path} disappeared from the gateway before it was read") from None
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                raise
            try:  # what lies there now (a link to a folder fails O_DIRECTORY before O_NOFOLLOW)
                kind = kind_of(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
            except FileNotFoundError:
                raise GatewayError(f"{path} disappeared from the gateway before it was read") from None
            raise (_refused_folder(path, kind) if flags == _DIR else _refused(name, kind)) from None

    def read_bytes(self, path: str, limit: int = 1 << 22) -> bytes:
        """A small file's content (refuses files larger than ``limit`` bytes, and links and FIFOs)."""
        fd, st = self._open_regular(path)
        with os.fdopen(fd, "rb") as fh:
            if st.st_size > limit:
                raise GatewayError(f"{path}: {st.st_size} bytes, more than the {limit} expected")
            return fh.read(limit + 1)

    def download(self, remote: RemoteFile, dest: Path) -> Path:
        """Copy atomically to ``dest`` (``dest.part`` first, size verified, then renamed); a partial
        ``dest.part`` left by an interrupted copy is resumed."""
        fd, st = self._open_regular(remote.path)
        with os.fdopen(fd, "rb") as src:
            if st.st_size != remote.size:
                raise DownloadSizeError(f"{remote.name}: {st.st_size} bytes in the gateway but {remote.size} when "
                                        "listed (changed or still being written?); will retry")
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            offset = part.stat().st_size if part.exists() else 0
            if offset > remote.size:
                part.unlink()
                offset = 0
            t0 = time.monotonic()
            with open(part, "ab") as out:
                src.seek(offset)
                while chunk := src.read(CHUNK * 4):
                    out.write(chunk)
                out.flush()
        got = part.stat().st_size
        if got != remote.size:
            part.unlink(missing_ok=True)
            raise DownloadSizeError(
                f"{remote.name}: copied {got} bytes but the gateway listed {remote.size} (still being written?); "
                "will retry"
            )
        part.replace(dest)
        log.info("copied %s (%d bytes) in %.2fs", remote.name, got, time.monotonic() - t0)
        return dest
