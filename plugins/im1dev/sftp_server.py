"""A real SFTP server (SSH + SFTP protocol, via paramiko's server side) for the demo and the tests.

It plays the supplier: it serves a folder tree over SFTP on loopback, authenticates clients by
public key only, presents a fixed host key that clients pin, and never lets a client out of its
root. For reliability tests it can misbehave on request (:class:`Faults`): drop the connection
part-way through a download, stall a listing, or stop answering (reads of a file from some byte
on, or the start of the SFTP session) while keeping the connection up.

Run it from the command line with ``im1 sftp-server`` or in-process with :class:`SftpServer`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

from im1.transport.keys import load_private_key

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Misbehaviour on demand (each entry fires once, then clears)."""

    # file name -> byte offset after which the connection is dropped mid-download
    drop_after_bytes: dict[str, int] = field(default_factory=dict)
    # how many bytes of a file the client has kept (e.g. the size of its ``.part``): when set, a drop
    # waits (up to 30 s) until the client has kept some, so "dropped part-way" does not depend on how
    # fast a busy client reads what was already sent
    client_kept: Callable[[str], int] | None = None
    # seconds to stall each directory listing
    listing_delay: float = 0.0
    # file name -> byte offset from which the server stops answering reads (the connection stays up)
    stall_after_bytes: dict[str, int] = field(default_factory=dict)
    # the server accepts the login and the session channel, then never answers the SFTP subsystem request
    stall_sftp_start: bool = False
    # set when the server stops: a stalled request then returns
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # file name -> the offset of the first read of each opening of the file (a download that
    # resumes after a drop starts past 0; one that restarts starts at 0 again)
    first_reads: dict[str, list[int]] = field(default_factory=dict)

    def opened_at(self, name: str, offset: int) -> None:
        with self.lock:
            self.first_reads.setdefault(name, []).append(offset)

    def wait_until_kept(self, name: str, timeout: float = 30.0) -> None:
        """Before a drop: wait until the client has kept some of ``name`` (see ``client_kept``)."""
        if self.client_kept is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client_kept(name) > 0:
                return
            time.sleep(0.02)
        log.warning("fault injection: the client kept nothing of %s in %.0f s; dropping anyway", name, timeout)

    def take_drop(self, name: str, offset: int) -> bool:
        return self._take(self.drop_after_bytes, name, offset)

    def take_stall(self, name: str, offset: int) -> bool:
        return self._take(self.stall_after_bytes, name, offset)

    def take_sftp_stall(self) -> bool:
        with self.lock:
            stall, self.stall_sftp_start = self.stall_sftp_start, False
        return stall

    def stall(self, what: str) -> None:
        """Answer nothing until the server stops (as a hung supplier server would)."""
        log.warning("fault injection: stalling %s", what)
        self.released.wait()

    def _take(self, faults: dict[str, int], name: str, offset: int) -> bool:
        with self.lock:
            limit = faults.get(name)
            if limit is not None and offset >= limit:
                del faults[name]
                return True
        return False


def load_public_key(path_or_text: str | Path) -> paramiko.PKey:
    """A public key from an OpenSSH ``<type> <base64>`` line or file (a private key file also works)."""
    import base64

    text = str(path_or_text)
    if not text.startswith(("ssh-", "ecdsa-")) and "PRIVATE KEY" not in text:
        text = Path(text).read_text()
    text = text.strip()
    if text.startswith(("ssh-", "ecdsa-")):
        ktype, b64 = text.split()[:2]
        return paramiko.PKey.from_type_string(ktype, base64.b64decode(b64))
    return load_private_key(text)


def public_key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def generate_ed25519(path: Path) -> paramiko.PKey:
    """Generate an Ed25519 key (OpenSSH format) at ``path`` with mode 0600 (via cryptography)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return load_private_key(path)


class _Auth(paramiko.ServerInterface):
    def __init__(self, username: str, authorized: list[paramiko.PKey], faults: Faults | None = None):
        self.username = username
        self.authorized = {(k.get_name(), k.get_base64()) for k in authorized}
        self.faults = faults or Faults()

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        if username == self.username and (key.get_name(), key.get_base64()) in self.authorized:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username, password):
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel, name):
        if self.faults.take_sftp_stall():
            self.faults.stall(f"the {name} subsystem request")
            return False
        return super().check_channel_subsystem_request(channel, name)


def _drain(sock, timeout: float = 30.0) -> None:
    """Wait until the peer has received everything already sent on ``sock``.

    Closing a socket that still holds unread input sends a reset, and the kernel then throws away
    whatever output the peer has not yet taken in. On a busy machine the client may be slow to
    read, so without this wait a "drop after N bytes" could drop far fewer than N (even nothing).
    """
    import fcntl
    import struct
    import termios

    deadline = time.monotonic() + timeout
    buf = bytearray(struct.calcsize("i"))
    while time.monotonic() < deadline:
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)  # bytes not yet acknowledged by the peer
        except (OSError, ValueError):
            return
        if struct.unpack("i", buf)[0] == 0:
            return
        time.sleep(0.02)


class _Handle(SFTPHandle):
    def __init__(self, flags, path: Path, server: SftpServer, transport: paramiko.Transport):
        super().__init__(flags)
        self._path = path
        self._server = server
        self._transport = transport
        self._read_yet = False

    def stat(self):
        return SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))

    def read(self, offset, length):
        if self._server.faults.take_stall(self._path.name, offset + length):
            self._server.faults.stall(f"reads of {self._path.name} from byte {offset}")
            return SFTP_FAILURE
        if self._server.faults.take_drop(self._path.name, offset + length):
            # like a network drop: what was already sent arrives, then the connection dies
            log.warning("fault injection: dropping connection while serving %s at %d", self._path.name, offset)
            self._server.faults.wait_until_kept(self._path.name)
            _drain(self._transport.sock)
            self._transport.close()
            return SFTP_FAILURE
        if not self._read_yet:
            self._read_yet = True
            self._server.faults.opened_at(self._path.name, offset)
        return super().read(offset, length)


def _make_sftp_interface(server: SftpServer):
    class _Jail(SFTPServerInterface):
        transport: paramiko.Transport | None = None  # set by the subsystem once the channel is open

        def _real(self, path: str) -> Path:
            root = server.root
            p = (root / path.lstrip("/")).resolve()
            if p != root and root not in p.parents:
                raise PermissionError(path)
            return p

        def canonicalize(self, path):
            p = "/" + str(Path("/", path).resolve()).lstrip("/")
            return p

        def list_folder(self, path):
            if server.faults.listing_delay:
                time.sleep(server.faults.listing_delay)
            try:
                real = self._real(path)
                out = []
                for name in sorted(os.listdir(real)):
                    attr = SFTPAttributes.from_stat(os.stat(real / name))
                    attr.filename = name
                    out.append(attr)
                return out
            except FileNotFoundError:
                return SFTP_NO_SUCH_FILE
            except PermissionError:
                return SFTP_PERMISSION_DENIED

        def stat(self, path):
            try:
                return SFTPAttributes.from_stat(os.stat(self._real(path)))
            except FileNotFoundError:
                return SFTP_NO_SUCH_FILE
            except PermissionError:
                return SFTP_PERMISSION_DENIED

        lstat = stat

        def open(self, path, flags, attr):
            if flags & (os.O_WRONLY | os.O_RDWR) and not server.writable:
                return SFTP_PERMISSION_DENIED
            try:
                real = self._real(path)
                if flags & (os.O_WRONLY | os.O_RDWR):
                    fd = os.open(real, flags, 0o644)
                    f = os.fdopen(fd, "r+b" if flags & os.O_RDWR else "wb")
                else:
                    f = open(real, "rb")
            except FileNotFoundError:
                return SFTP_NO_SUCH_FILE
            except PermissionError:
                return SFTP_PERMISSION_DENIED
            h = _Handle(flags, real, server, self.transport)
            h.readfile = f
            h.writefile = f if flags & (os.O_WRONLY | os.O_RDWR) else None
            return h

        def remove(self, path):
            if not server.writable:
                return SFTP_PERMISSION_DENIED
            try:
                os.remove(self._real(path))
            except FileNotFoundError:
                return SFTP_NO_SUCH_FILE
            return SFTP_OK

        def rename(self, oldpath, newpath):
            if not server.writable:
                return SFTP_PERMISSION_DENIED
            os.replace(self._real(oldpath), self._real(newpath))
            return SFTP_OK

        def mkdir(self, path, attr):
            if not server.writable:
                return SFTP_PERMISSION_DENIED
            os.makedirs(self._real(path), exist_ok=True)
            return SFTP_OK

    return _Jail


class SftpServer:
    """Serve ``root`` over SFTP on ``host:port`` (port 0 picks a free one) until :meth:`stop`."""

    def __init__(
        self,
        root: Path,
        *,
        host_key: paramiko.PKey,
        username: str,
        authorized_keys: list[paramiko.PKey],
        host: str = "127.0.0.1",
        port: int = 0,
        writable: bool = False,
        faults: Faults | None = None,
    ):
        self.root = Path(root).resolve()
        self.host_key = host_key
        self.username = username
        self.authorized_keys = authorized_keys
        self.host = host
        self.writable = writable
        self.faults = faults or Faults()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._transports: list[paramiko.Transport] = []
        self.connections = 0

    @property
    def host_key_line(self) -> str:
        return public_key_line(self.host_key)

    def start(self) -> SftpServer:
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, name=f"sftp-server:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._sock.listen(16)
        self._sock.settimeout(0.5)
        self._serve()

    def stop(self) -> None:
        self._stop.set()
        self.faults.released.set()
        for t in list(self._transports):
            t.close()
        if self._thread:
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> SftpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        self._transports.append(transport)
        self.connections += 1
        transport.add_server_key(self.host_key)

        class _Sub(SFTPServer):
            def __init__(self, channel, name, srv, sftp_si, *args, **kwargs):
                super().__init__(channel, name, srv, sftp_si, *args, **kwargs)
                self.server.transport = channel.get_transport()

        transport.set_subsystem_handler("sftp", _Sub, _make_sftp_interface(self))
        try:
            transport.start_server(server=_Auth(self.username, self.authorized_keys, self.faults))
            while transport.is_active() and not self._stop.is_set():
                time.sleep(0.1)
        except (paramiko.SSHException, EOFError, OSError) as err:
            log.debug("sftp session ended: %s", err)
        finally:
            transport.close()
            if transport in self._transports:
                self._transports.remove(transport)
