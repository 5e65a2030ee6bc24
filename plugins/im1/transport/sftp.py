"""SFTP fetch client (paramiko): pinned host key, key authentication, recursive listing,
atomic and resumable downloads.

* The server's host key must match the pinned key exactly; an unknown or changed key is refused
  (:class:`HostKeyError`), never accepted on first use.
* A download goes to ``<name>.part``, is checked against the remote size and only then renamed.
  If the connection drops, the next attempt resumes from the bytes already on disk.
* Nothing waits for ever on a stalled server: the TCP connect, the SSH banner, the key exchange,
  the authentication, opening the channel and starting the SFTP session are each bounded by
  ``timeout``; every request after that (listing, opening, each read) by ``session_timeout``. A
  stall closes the connection and raises :class:`SftpError` (the next attempt resumes).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import posixpath
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from im1.transport.keys import load_private_key

log = logging.getLogger(__name__)

CHUNK = 1 << 18  # small enough that little is lost if the connection drops mid-read


class SftpError(RuntimeError):
    pass


class HostKeyError(SftpError):
    pass


class DownloadSizeError(SftpError):
    pass


class RefusedFileError(SftpError):
    """A file the transport will not read as delivered: not a regular file (a FIFO, a device, a
    socket) or reached through a symbolic link. No retry can fix it: its batch is quarantined."""


@dataclass(frozen=True)
class SftpSettings:
    host: str
    port: int
    username: str
    private_key: str  # OpenSSH/PEM text, or a path to it
    host_key: str  # pinned server key "ssh-ed25519 AAAA..." (known_hosts form, no host); several: one per line
    key_passphrase: str | None = None
    timeout: float = 30.0
    # the EMIS server has stalled listings at weekends: bound every operation
    session_timeout: float = 600.0


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    mtime: int
    kind: str = "file"  # "file" (regular); listed only when asked for: "symbolic link", "FIFO", ...

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


def kind_of(mode: int) -> str:
    """What a directory entry is, in an operator's words ("file" for a regular file)."""
    for test, kind in ((stat.S_ISREG, "file"), (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "folder")):
        if test(mode):
            return kind
    return "special file"


def fingerprint(key: paramiko.PKey) -> str:
    """A host key's SHA256 fingerprint as OpenSSH prints it (``SHA256:<base64, no padding>``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _pinned_keys(text: str) -> list[paramiko.PKey]:
    """The pinned host keys: one per line (during a key rotation, the old and the new key)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise HostKeyError("no pinned host key: set the supplier server's public key ('<type> <base64>')")
    return [_pinned_key(ln) for ln in lines]


def _pinned_key(line: str) -> paramiko.PKey:
    parts = line.strip().split()
    if len(parts) >= 3 and not parts[0].startswith(("ssh-", "ecdsa-")):
        parts = parts[1:]  # a known_hosts line with the host first
    if len(parts) < 2:
        raise HostKeyError(f"pinned host key {line!r} is not in the form '<type> <base64>'")
    ktype, b64 = parts[0], parts[1]
    try:
        return paramiko.PKey.from_type_string(ktype, base64.b64decode(b64))
    except Exception as err:
        raise HostKeyError(f"pinned host key could not be decoded: {err}") from None


class SftpClient:
    """A connected SFTP session. Use as a context manager."""

    def __init__(self, settings: SftpSettings):
        self.settings = settings
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> SftpClient:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        """Connect, accepting the server only if it presents a pinned host key.

        ``host_key`` may hold several keys, one per line, while a supplier rotates its key: each is
        tried in turn (one SSH handshake each), so the old and the new key both work until the old
        one is removed from the connection.
        """
        pins = _pinned_keys(self.settings.host_key)
        errors: list[str] = []
        for pinned in pins:
            try:
                self._connect(pinned)
                return
            except HostKeyError as err:
                errors.append(str(err))
        if len(pins) == 1:
            raise HostKeyError(errors[0])
        raise HostKeyError(f"none of the {len(pins)} pinned host keys matched: " + " | ".join(errors))

    def _connect(self, pinned: paramiko.PKey) -> None:
        s = self.settings
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        hostname = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
        ssh.get_host_keys().add(hostname, pinned.get_name(), pinned)
        pkey = load_private_key(s.private_key, s.key_passphrase)
        try:
            ssh.connect(
                s.host,
                port=s.port,
                username=s.username,
                pkey=pkey,
                look_for_keys=False,
                allow_agent=False,
                timeout=s.timeout,
                banner_timeout=s.timeout,
                auth_timeout=s.timeout,
                channel_timeout=s.timeout,
            )
        except paramiko.BadHostKeyException as err:
            ssh.close()
            raise HostKeyError(
                f"host key for {s.host}:{s.port} has CHANGED: the server offers {err.key.get_name()} "
                f"{fingerprint(err.key)}, the pinned key is {pinned.get_name()} {fingerprint(pinned)}; refusing to "
                "connect (compare these SHA256 fingerprints with the ones the supplier gave you, e.g. as "
                "`ssh-keyscan <host> | ssh-keygen -lf -` prints them; if the supplier really rotated its key, "
                "update the pinned host_key in the connection)"
            ) from None
        except paramiko.SSHException as err:
            if "not found in known_hosts" in str(err):
                ssh.close()
                raise HostKeyError(
                    f"host key for {s.host}:{s.port} is not the pinned key (unknown server key); refusing to connect"
                ) from None
            raise SftpError(f"SSH connection to {s.host}:{s.port} failed: {err}") from err
        except OSError as err:
            raise SftpError(f"cannot reach SFTP server {s.host}:{s.port}: {err}") from err
        self._ssh = ssh
        try:
            self._sftp = self._open_sftp(ssh.get_transport())
        except Exception:
            self.close()
            raise

    def _open_sftp(self, transport: paramiko.Transport) -> paramiko.SFTPClient:
        """The SFTP session on a new channel, every step bounded (paramiko's ``open_sftp`` waits for
        the answer to the subsystem request and for the server's SFTP version without a limit)."""
        s = self.settings
        where = f"{s.host}:{s.port}"
        gave_up = threading.Event()
        too_slow = (f"SFTP server {where} did not start the SFTP session within {s.timeout:.0f} s; gave up "
                    "(will retry)")

        def give_up() -> None:
            gave_up.set()
            transport.close()  # ends paramiko's wait for the subsystem answer with an error

        timer = threading.Timer(s.timeout, give_up)
        timer.daemon = True
        timer.start()
        try:
            chan = transport.open_session(timeout=s.timeout)
            chan.settimeout(s.timeout)
            chan.invoke_subsystem("sftp")
            sftp = paramiko.SFTPClient(chan)  # the version exchange: bounded by the channel timeout
        except (paramiko.SSHException, EOFError, OSError) as err:
            if gave_up.is_set() or isinstance(err, TimeoutError):
                raise SftpError(too_slow) from None
            raise SftpError(f"SFTP session with {where} could not be started: {err}") from err
        finally:
            timer.cancel()
        if gave_up.is_set():  # the limit struck just as the session started: the connection is closed
            raise SftpError(too_slow)
        chan.settimeout(s.session_timeout)
        return sftp

    @contextlib.contextmanager
    def _answer_within(self, what: str) -> Iterator[None]:
        """A request the server does not answer within ``session_timeout`` closes the connection
        (so that nothing else waits on it) and raises SftpError."""
        try:
            yield
        except TimeoutError:
            self.close()
            raise SftpError(f"{what}: no answer from the SFTP server for {self.settings.session_timeout:.0f} s "
                            "(it stalled); connection closed, will retry") from None

    def close(self) -> None:
        for obj in (self._sftp, self._ssh):
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    pass
        self._sftp = None
        self._ssh = None

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            raise SftpError("not connected")
        return self._sftp

    def walk(self, root: str, *, special: bool = False) -> Iterator[RemoteFile]:
        """Every regular file under ``root``, recursively, in sorted order (a link the server lists as
        a link, as OpenSSH does, is not walked into). With ``special``, entries that are neither files
        nor folders (links, FIFOs, ...)
        are listed too, with their ``kind``, so that a caller can refuse them by name."""
        stack = [root]
        while stack:
            d = stack.pop()
            try:
                with self._answer_within(f"listing {d}"):
                    entries = sorted(self.sftp.listdir_attr(d), key=lambda a: a.filename)
            except FileNotFoundError:
                if d == root:
                    raise SftpError(f"remote folder {root!r} does not exist{self._where_to_look(root)}") from None
                continue
            subdirs = []
            for a in entries:
                p = posixpath.join(d, a.filename)
                if stat.S_ISDIR(a.st_mode or 0):
                    subdirs.append(p)
                elif stat.S_ISREG(a.st_mode or 0):
                    yield RemoteFile(p, int(a.st_size or 0), int(a.st_mtime or 0))
                elif special:
                    yield RemoteFile(p, int(a.st_size or 0), int(a.st_mtime or 0), kind=kind_of(a.st_mode or 0))
            stack.extend(reversed(subdirs))

    def _where_to_look(self, missing: str) -> str:
        """Help for a wrong remote path: the login folder and what the nearest existing parent
        holds (a path from the supplier's documentation may be relative to a chroot, or not)."""
        try:
            with self._answer_within("looking for the remote folder"):
                home = self.sftp.normalize(".")
                parent = posixpath.dirname(missing.rstrip("/")) or "/"
                while parent not in ("", "/"):
                    try:
                        self.sftp.stat(parent)
                        break
                    except FileNotFoundError:
                        parent = posixpath.dirname(parent)
                names = sorted(self.sftp.listdir(parent or "/"))
        except Exception:  # only a hint: the error itself stands
            return ""
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        return (f" (the login folder is {home!r}; {parent or '/'!r} holds: {shown or 'nothing'}; set the feed's "
                "transport path to the folder that holds the extract's files or batch folders)")

    def read_bytes(self, path: str, limit: int = 1 << 22) -> bytes:
        """A small remote file's content (e.g. a TPP SRManifest.csv); refuses files over ``limit`` bytes."""
        with self._answer_within(path):
            size = int(self.sftp.stat(path).st_size or 0)
            if size > limit:
                raise SftpError(f"{path}: {size} bytes, more than the {limit} expected")
            with self.sftp.open(path, "rb") as fh:
                return fh.read()

    def download(self, remote: RemoteFile, dest: Path) -> Path:
        """Download atomically to ``dest`` (``dest.part`` first, size verified, then renamed).

        If ``dest.part`` exists from an interrupted attempt, the download resumes from its end.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        if offset > remote.size:
            part.unlink()
            offset = 0
        t0 = time.monotonic()
        with self._answer_within(remote.name):
            src = self.sftp.open(remote.path, "rb")
        # a stalled read closes the connection inside, so closing the remote file does not wait too
        with src, open(part, "ab") as out, self._answer_within(remote.name):
            if offset == 0:
                src.prefetch(remote.size)
            else:
                src.seek(offset)
                log.info("resuming %s at byte %d of %d", remote.name, offset, remote.size)
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
            out.flush()
        got = part.stat().st_size
        if got != remote.size:
            raise DownloadSizeError(
                f"{remote.name}: downloaded {got} bytes but the server lists {remote.size}; will retry"
            )
        part.replace(dest)
        log.info("downloaded %s (%d bytes) in %.2fs", remote.name, got, time.monotonic() - t0)
        return dest
