"""An embedded PostgreSQL 16 server for the demo, local Airflow and the tests.

The binaries come from the ``pgserver`` wheel (PostgreSQL inside a Python package), so nothing
has to be installed or running beforehand. The cluster lives in a project folder (by default
``.im1/pg``), listens on loopback only, keeps its data across runs, and is stopped by whoever
started it (:meth:`EmbeddedPostgres.running` is a context manager that never leaves an orphan).

PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system
user (``pgserver``, created on first use), as pgserver itself does.
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


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1 (port chosen once and remembered)."""

    def __init__(self, data_dir: Path, *, durable: bool = True, superuser: str = "postgres",
                 port: int | None = None):
        """``port`` pins the port of a new cluster, so its URLs can be handed out before it starts."""
        self.data_dir = Path(data_dir).resolve()
        self._pinned_port = port
        self.durable = durable
        self.superuser = superuser
        self.bin = postgres_bin_dir()
        self._user = self._run_as_user()
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
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
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

    def _prepare_permissions(self) -> None:
        """As root: let the unprivileged server user reach the binaries, the data dir and its log."""
        if self._user is None:
            return
        pw = pwd.getpwnam(self._user)
        rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        for base in (self.data_dir.parent, self.bin.parent):
            p = base
            while True:
                mode = p.stat().st_mode
                if mode & rx != rx:
                    p.chmod(mode | rx)
                if p.parent == p:
                    break
                p = p.parent
        for root, dirs, files in os.walk(self.bin.parent):
            for d in dirs:
                dp = Path(root) / d
                dp.chmod(dp.stat().st_mode | rx)
            for f in files:
                fp = Path(root) / f
                fp.chmod(fp.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self.log_file.touch(exist_ok=True)
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
