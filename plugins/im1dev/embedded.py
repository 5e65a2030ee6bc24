"""An embedded PostgreSQL 16 server for the demo, local Airflow and the tests.

The binaries come from the ``pgserver`` wheel (PostgreSQL inside a Python package), so nothing
has to be installed or running beforehand. The cluster lives in a project folder (by default
``.im1/pg``), listens on loopback only, keeps its data across runs, and is stopped by whoever
started it (:meth:`EmbeddedPostgres.running` is a context manager that never leaves an orphan).

PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system
user (``pgserver``, created on first use), as pgserver itself does. That user must reach its data
directory and the binaries, and no folder is opened to everyone for it (a private folder stays
private): as root

* the cluster lives in a folder of its own under ``/var/lib/im1-pg`` (``IM1_PG_HOME`` overrides;
  the parent is created ``0711``: others may pass through, not list), named by a hash of the data
  directory asked for (``<hash>/pg``, with ``pg.log``, ``pg.port`` and ``origin``, the path asked
  for); the folder is the server user's, ``0700``. ``EmbeddedPostgres.data_dir`` is that path. A
  cluster an older version initialised where it was asked for is moved there when not running.
  Clusters whose asked-for folder is gone (a removed test state folder) are removed when the next
  cluster is initialised;
* the binaries are used in place when the server user can already read them, else copied once
  into ``<IM1_PG_HOME>/pginstall-<hash>`` (root's, readable by all).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

RUN_AS_WHEN_ROOT = "pgserver"
HOME_WHEN_ROOT = Path("/var/lib/im1-pg")


class EmbeddedPostgresError(RuntimeError):
    pass


def _pgserver_bin() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the 'pgserver' package is not installed (run `make venv`)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def postgres_bin_dir() -> Path:
    """Directory with initdb/pg_ctl/psql: ``IM1_PG_BIN`` if set, else the pgserver wheel's bundle."""
    env = os.environ.get("IM1_PG_BIN")
    return Path(env) if env else _pgserver_bin()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as PostgreSQL binds: a port in TIME_WAIT from our own last run is free to reuse
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pg_home() -> Path:
    """Where clusters (and, if needed, binaries) live when we are root (``IM1_PG_HOME`` overrides)."""
    return Path(os.environ.get("IM1_PG_HOME") or HOME_WHEN_ROOT)


def _others_can_reach(path: Path, *, read: bool = False) -> bool:
    """True if every folder down to ``path`` lets others pass (and, with ``read``, ``path``'s tree is
    readable by others): so another user reaches it without any mode being changed."""
    for p in [path, *path.parents]:
        if p.is_dir() and not p.stat().st_mode & stat.S_IXOTH:
            return False
    if read:
        for root, dirs, files in os.walk(path):
            for name in dirs:
                if (Path(root) / name).stat().st_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
                    return False
            for name in files:
                fp = Path(root) / name
                if not fp.is_symlink() and not fp.stat().st_mode & stat.S_IROTH:
                    return False
    return True


def _home_for_root() -> Path:
    """``pg_home()``, created ``0711`` by root if missing; its ancestors must already let others pass."""
    home = pg_home()
    if not home.is_dir():
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o711)
    if not _others_can_reach(home):
        raise EmbeddedPostgresError(f"{home} (or a folder above it) does not let other users pass; the embedded "
                                    "PostgreSQL runs as an unprivileged user when started as root. Name a "
                                    "folder it can reach with IM1_PG_HOME (nothing is chmodded for it)")
    return home


def _server_binaries(src: Path) -> Path:
    """The bin folder the server user can run: ``src`` when it can already read it, else a copy of
    its install tree in ``pg_home()`` (made once, under a lock, by copying then renaming)."""
    install = src.parent
    if _others_can_reach(install, read=True):
        return src
    import hashlib

    digest = hashlib.sha256(f"{install}:{(src / 'postgres').stat().st_mtime_ns}".encode()).hexdigest()[:16]
    home = _home_for_root()
    dest = home / f"pginstall-{digest}"
    with open(home / f"{dest.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if not dest.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=home))
            shutil.copytree(install, tmp / "i", symlinks=True)
            for root, dirs, files in os.walk(tmp):
                for name in [*dirs, *files]:
                    fp = Path(root) / name
                    if not fp.is_symlink():
                        fp.chmod(fp.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if fp.is_dir() else 0))
            (tmp / "i").rename(dest)
            tmp.rmdir()
    return dest / src.name


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """Create the unprivileged system user the server runs as (when we are root), once.

    Parallel first runs (pytest-xdist workers on a new machine) would otherwise race: two
    ``useradd`` at once fail, or leave one process holding a uid the name no longer maps to (and
    initdb then cannot reach its directory). One machine-wide lock; re-checked under it.
    """
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    lock = Path(tempfile.gettempdir()) / f"im1-useradd-{name}.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
            res = subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
                                 capture_output=True, text=True)
            if res.returncode not in (0, 9):  # 9: it exists (created by something else meanwhile)
                raise EmbeddedPostgresError(f"could not create the system user {name!r} the embedded PostgreSQL "
                                            f"runs as (PostgreSQL refuses to run as root): {res.stderr.strip()}")
            return pwd.getpwnam(name)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sweep_orphans(home: Path) -> None:
    """Remove clusters under ``home`` whose asked-for folder's parent is gone and that are not running
    (a test session's state folder was removed while its cluster stayed here)."""
    for origin_file in home.glob("*/origin"):
        folder = origin_file.parent
        try:
            origin = Path(origin_file.read_text().strip())
        except OSError:
            continue
        if origin.parent.exists() or (folder / origin.name / "postmaster.pid").exists():
            continue
        log.info("removing the embedded cluster of %s (that folder is gone)", origin)
        shutil.rmtree(folder, ignore_errors=True)


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1 (port chosen once and remembered)."""

    def __init__(self, data_dir: Path, *, durable: bool = True, superuser: str = "postgres",
                 port: int | None = None):
        """``port`` pins the port of a new cluster, so its URLs can be handed out before it starts."""
        self.origin = Path(data_dir).resolve()  # where the cluster was asked for
        self._pinned_port = port
        self.durable = durable
        self.superuser = superuser
        self._user = self._run_as_user()
        self.bin = postgres_bin_dir() if self._user is None else _server_binaries(postgres_bin_dir())
        self.data_dir = self.origin if self._user is None else self._root_data_dir(self.origin)
        self._port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        self._lock_file = self.data_dir.parent / f"{self.data_dir.name}.lock"
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.log"

    # -- identity -----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        try:
            return int(self._port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            if self._pinned_port is not None:
                return self._pinned_port
            raise EmbeddedPostgresError(f"{self.data_dir} has not been initialised yet") from None

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{database}"

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.initialised:
            return False
        res = self._pg_ctl(["status"], check=False)
        return res.returncode == 0

    def ensure_started(self) -> bool:
        """Initialise if needed and start if not running. Returns True if this call started it."""
        self._make_home()
        with self._locked():
            if not self.initialised:
                self._initdb()
            if self.is_running():
                return False
            if not _port_free(self.port):
                if self._pinned_port is not None:
                    raise EmbeddedPostgresError(f"port {self.port} was pinned for {self.data_dir} and another "
                                                "program has taken it since")
                new = free_port()
                log.warning("port %s is taken by another program; the embedded server moves to %s", self.port, new)
                self._set_port(new)
            self._pg_ctl(["-l", str(self.log_file), "-w", "-t", "60", "start"])
            self._wait_ready()
            return True

    def stop(self) -> None:
        if not self.data_dir.parent.is_dir():
            return  # never initialised (as root, its folder is made on first start)
        with self._locked():
            if self.is_running():
                self._pg_ctl(["-m", "fast", "-w", "-t", "60", "stop"])

    @contextlib.contextmanager
    def running(self) -> Iterator[EmbeddedPostgres]:
        """Run the server for the duration of the block; stop it afterwards if we started it."""
        started = self.ensure_started()
        try:
            yield self
        finally:
            if started:
                self.stop()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for p in (self._port_file, self._lock_file, self.log_file):
            p.unlink(missing_ok=True)
        if self.data_dir != self.origin:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    # -- internals ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_file, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _run_as_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        ensure_system_user(RUN_AS_WHEN_ROOT)
        return RUN_AS_WHEN_ROOT

    @staticmethod
    def _root_data_dir(origin: Path) -> Path:
        """As root: the cluster's folder of its own under ``pg_home()``. A cluster an older version
        initialised at ``origin`` is moved there (with its port file and log) if it is not running,
        else used where it is until it is stopped."""
        import hashlib

        home = pg_home() / hashlib.sha256(str(origin).encode()).hexdigest()[:24]
        if (origin / "PG_VERSION").exists() and not (home / origin.name).exists():
            if (origin / "postmaster.pid").exists():
                log.warning("the embedded cluster in %s is running; it moves to %s once stopped", origin, home)
                return origin
            _home_for_root()
            home.mkdir(mode=0o700, exist_ok=True)
            for suffix in ("", ".port", ".log"):
                old = origin.with_name(origin.name + suffix)
                if old.exists():
                    shutil.move(str(old), str(home / old.name))
            pw = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            log.info("moved the embedded cluster from %s to %s (no folder is opened for it)", origin, home)
        return home / origin.name

    def _make_home(self) -> None:
        """The folder holding the data dir, its log, port and lock files. As root, a new one is the
        server user's (``0700``) inside ``pg_home()``; no existing folder's mode is changed."""
        if self._user is None or self.data_dir == self.origin:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            return
        home = _home_for_root()
        folder = self.data_dir.parent
        if not folder.is_dir():
            _sweep_orphans(home)
            pw = pwd.getpwnam(self._user)
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chown(folder, pw.pw_uid, pw.pw_gid)
            folder.chmod(0o700)
        (folder / "origin").write_text(str(self.origin) + "\n")

    def _prepare_permissions(self) -> None:
        """As root: the data dir and its log belong to the unprivileged server user (the log readable
        by it alone: it may hold statements)."""
        if self._user is None:
            return
        pw = pwd.getpwnam(self._user)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self.log_file.touch(mode=0o600, exist_ok=True)
        os.chown(self.log_file, pw.pw_uid, pw.pw_gid)

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        res = subprocess.run(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            user=self._user,
            cwd="/",
        )
        if check and res.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed (exit {res.returncode}): {res.stdout.strip()}\n{tail}".strip()
            )
        return res

    def _pg_ctl(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
        return self._run([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), *args], check=check)

    def _initdb(self) -> None:
        self._make_home()
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(f"{self.data_dir} exists but is not a PostgreSQL cluster; move it away")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._prepare_permissions()
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        self._set_port(self._pinned_port or free_port())

    def _set_port(self, port: int) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": "''",
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "work_mem": "'32MB'",
            "maintenance_work_mem": "'256MB'",
            "max_wal_size": "'2GB'",
            "synchronous_commit": "off",
            "timezone": "'UTC'",
            "log_min_messages": "warning",
        }
        if not self.durable:
            settings.update({"fsync": "off", "full_page_writes": "off"})
        conf = self.data_dir / "postgresql.auto.conf"
        lines = ["# managed by im1dev.embedded"] + [f"{k} = {v}" for k, v in settings.items()]
        # postgresql.auto.conf belongs to the server user; write it through a temp file as that user
        conf.write_text("\n".join(lines) + "\n")
        if self._user is not None:
            pw = pwd.getpwnam(self._user)
            os.chown(conf, pw.pw_uid, pw.pw_gid)
        self._port_file.write_text(str(port))

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self._run(
                [str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", self.superuser],
                check=False,
            )
            if res.returncode == 0:
                return
            time.sleep(0.2)
        raise EmbeddedPostgresError(f"embedded PostgreSQL in {self.data_dir} did not become ready in {timeout}s")
