"""The embedded PostgreSQL: starts without a server installed, keeps data, stops cleanly."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import psycopg

from im1dev.embedded import EmbeddedPostgres


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (some container init processes never reap)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _postmaster_pid(srv: EmbeddedPostgres) -> int:
    return int((srv.data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_persistent_across_restarts_and_never_orphaned(tmp_path):
    srv = EmbeddedPostgres(tmp_path / "pg", durable=False)
    with srv.running():
        port = srv.port
        pid = _postmaster_pid(srv)
        with psycopg.connect(srv.url(), autocommit=True) as c:
            c.execute("create table kept (x int)")
            c.execute("insert into kept values (42)")
    assert not srv.is_running()
    assert not _alive(pid)  # the server process is gone: no orphan
    with srv.running():
        assert srv.port == port  # same port remembered
        with psycopg.connect(srv.url()) as c:
            assert c.execute("select x from kept").fetchone() == (42,)
    assert not srv.is_running()
    srv.destroy()  # as root the cluster lives outside tmp_path


def test_running_is_reentrant_and_only_the_starter_stops(tmp_path):
    srv = EmbeddedPostgres(tmp_path / "pg", durable=False)
    with srv.running():
        with srv.running():  # already running: the inner block must not stop it
            pass
        assert srv.is_running()
    assert not srv.is_running()
    srv.destroy()
    assert not (tmp_path / "pg").exists()


def test_first_use_on_a_new_root_machine_is_safe_from_parallel_workers(tmp_path):
    """On a new machine the first run creates the unprivileged user the server runs as; pytest-xdist
    workers (and two `make` targets) do it at the same moment. Each must get the same user, and a
    cluster in a private temp folder must initialise as that user."""
    import os
    import pwd
    import subprocess
    import sys
    import uuid

    import pytest

    if os.geteuid() != 0:
        pytest.skip("only root creates the server's system user")
    name = f"im1t{uuid.uuid4().hex[:8]}"
    probe = ("import sys, tempfile; from pathlib import Path; import im1dev.embedded as E\n"
             f"E.RUN_AS_WHEN_ROOT = {name!r}\n"
             "srv = E.EmbeddedPostgres(Path(tempfile.mkdtemp(dir=sys.argv[1])) / 'pg', durable=False)\n"
             "srv._initdb(); print(E.pwd.getpwnam(E.RUN_AS_WHEN_ROOT).pw_uid)\n")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", probe, str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [e[-800:] for _, e in outs]
        assert len({o.strip() for o, _ in outs}) == 1  # one user, one uid
        assert {o.strip() for o, _ in outs} == {str(pwd.getpwnam(name).pw_uid)}
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        from im1dev.embedded import pg_home

        for origin in pg_home().glob("*/origin"):  # the clusters these probes initialised (as root)
            if origin.read_text().strip().startswith(str(tmp_path)):
                shutil.rmtree(origin.parent, ignore_errors=True)


def _modes(paths) -> dict:
    return {p: oct(p.stat().st_mode) for p in paths if p.exists()}


def test_started_as_root_it_opens_no_private_folder(tmp_path):
    """Issue 13: as root the server runs as an unprivileged user; it must reach its data directory and
    binaries without any existing folder being opened to others (a 0700 state folder stays 0700)."""
    import os
    import stat

    import pytest

    from im1dev.embedded import postgres_bin_dir

    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another user")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    srv = EmbeddedPostgres(private / "state" / "pg", durable=False)
    src = postgres_bin_dir().parent
    watched = [private, *private.parents, src, *src.parents]
    for root, dirs, files in os.walk(src):
        watched += [Path(root) / n for n in dirs + files if not (Path(root) / n).is_symlink()]
    before = _modes(watched)
    try:
        with srv.running():
            with psycopg.connect(srv.url(), autocommit=True) as c:
                assert c.execute("select current_setting('data_directory')").fetchone() == (str(srv.data_dir),)
            assert _modes(watched) == before
            assert stat.S_IMODE(private.stat().st_mode) == 0o700
            # its own folder is the server user's alone
            assert stat.S_IMODE(srv.data_dir.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(srv.log_file.stat().st_mode) == 0o600
    finally:
        srv.destroy()
    assert not srv.data_dir.parent.exists()


def test_a_cluster_an_older_version_kept_in_the_state_folder_moves_to_its_own_folder(tmp_path):
    """As root, a cluster initialised where it was asked for (what older versions did) is moved, data
    and port kept, into the server user's own folder, and no folder above it is opened."""
    import os
    import shutil

    import pytest

    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another user")
    origin = tmp_path / "state" / "pg"
    srv = EmbeddedPostgres(origin, durable=False)
    with srv.running(), psycopg.connect(srv.url(), autocommit=True) as c:
        c.execute("create table kept (x int)")
        c.execute("insert into kept values (7)")
    origin.parent.mkdir(mode=0o700)
    for suffix in ("", ".port", ".log"):  # where an older version kept them
        shutil.move(str(srv.data_dir) + suffix, str(origin) + suffix)
    mode = origin.parent.stat().st_mode
    moved = EmbeddedPostgres(origin, durable=False)
    try:
        assert moved.data_dir == srv.data_dir and not origin.exists()
        with moved.running(), psycopg.connect(moved.url()) as c:
            assert moved.port == srv.port
            assert c.execute("select x from kept").fetchone() == (7,)
        assert origin.parent.stat().st_mode == mode
    finally:
        moved.destroy()
