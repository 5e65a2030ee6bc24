"""The embedded PostgreSQL: starts without a server installed, keeps data, stops cleanly."""

from __future__ import annotations

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


def test_running_is_reentrant_and_only_the_starter_stops(tmp_path):
    srv = EmbeddedPostgres(tmp_path / "pg", durable=False)
    with srv.running():
        with srv.running():  # already running: the inner block must not stop it
            pass
        assert srv.is_running()
    assert not srv.is_running()
    srv.destroy()
    assert not (tmp_path / "pg").exists()
