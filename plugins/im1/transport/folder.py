"""A local (or mounted) gateway folder with the same interface as :class:`im1.transport.sftp.SftpClient`.

TPP delivers SystmOne extracts into a folder (the TPP gateway client writes them there); the
ingest pipeline lists and copies from it exactly as it would from an SFTP site: ``walk`` lists
regular files recursively, ``download`` copies atomically (``<name>.part`` first, size checked,
then renamed) and resumes a partial copy, ``read_bytes`` reads a small file (the manifest).
Paths are POSIX-style and absolute, like remote paths.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from im1.transport.sftp import CHUNK, DownloadSizeError, RemoteFile, SftpError

log = logging.getLogger(__name__)


class GatewayError(SftpError):
    """The gateway folder cannot be read."""


class FolderClient:
    """A gateway folder on this machine. Use as a context manager (nothing to open or close)."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root else None

    def __enter__(self) -> FolderClient:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def walk(self, root: str | Path) -> Iterator[RemoteFile]:
        """Every regular file under ``root``, recursively, in sorted order (hidden files skipped)."""
        top = Path(root)
        if not top.is_dir():
            raise GatewayError(f"gateway folder {str(top)!r} does not exist or is not a folder")
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except FileNotFoundError:
                continue  # removed while listing
            except PermissionError as err:
                raise GatewayError(f"cannot list gateway folder {str(d)!r}: {err}") from None
            subdirs = []
            for e in entries:
                if e.name.startswith("."):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(Path(e.path))
                elif stat.S_ISREG(st.st_mode):
                    yield RemoteFile(Path(e.path).as_posix(), int(st.st_size), int(st.st_mtime))
            stack.extend(reversed(subdirs))

    def read_bytes(self, path: str, limit: int = 1 << 22) -> bytes:
        """A small file's content (refuses files larger than ``limit`` bytes)."""
        p = Path(path)
        size = p.stat().st_size
        if size > limit:
            raise GatewayError(f"{path}: {size} bytes, more than the {limit} expected")
        return p.read_bytes()

    def download(self, remote: RemoteFile, dest: Path) -> Path:
        """Copy atomically to ``dest`` (``dest.part`` first, size verified, then renamed); a partial
        ``dest.part`` left by an interrupted copy is resumed."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        if offset > remote.size:
            part.unlink()
            offset = 0
        t0 = time.monotonic()
        try:
            src = open(remote.path, "rb")
        except FileNotFoundError:
            raise GatewayError(f"{remote.path} disappeared from the gateway before it was copied") from None
        with src, open(part, "ab") as out:
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
