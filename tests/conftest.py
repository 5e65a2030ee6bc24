"""Test session set-up: real PostgreSQL, real gpg, real SFTP, real Airflow.

Before anything imports Airflow, the session gets its own state folder, a PostgreSQL (a fresh
embedded cluster, or scratch databases on the server named by ``IM1_TEST_DATABASE_URL``), a
bootstrapped warehouse and a migrated Airflow metadata database. Everything is torn down at the
end, including the embedded server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SESSION: dict = {}


def _scratch_databases(url: str) -> tuple[str, str, str]:
    import psycopg
    from psycopg import sql

    from im1.warehouse import Warehouse

    suffix = uuid.uuid4().hex[:8]
    wh_db, af_db = f"im1_test_{suffix}", f"airflow_test_{suffix}"
    admin = Warehouse(admin_url=url)
    with psycopg.connect(admin.url_for("postgres"), autocommit=True) as conn:
        for db in (wh_db, af_db):
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
    return admin.url_for(wh_db), admin.url_for(af_db), admin.url_for("postgres")


def _xdist_controller(config: pytest.Config) -> bool:
    """True in the process that only hands tests to pytest-xdist workers (``-n``): it runs none."""
    return bool(getattr(config.option, "numprocesses", None)) and "PYTEST_XDIST_WORKER" not in os.environ


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("IM1_TEST_SESSION_READY") or _xdist_controller(config):
        return
    # each session (each xdist worker) gets a state folder, a PostgreSQL, a warehouse, an Airflow
    # metadata database and dbt/cosmos target folders of its own, so workers never share state
    state = Path(tempfile.mkdtemp(prefix="im1-test-"))
    os.environ["IM1_STATE_DIR"] = str(state)
    os.environ["IM1_PROJECT_ROOT"] = str(ROOT)
    os.environ.pop("IM1_FEEDS_FILE", None)
    _SESSION["state"] = state

    from im1.warehouse import Warehouse
    from im1.warehouse.bootstrap import bootstrap
    from im1dev import runtime
    from im1dev.embedded import EmbeddedPostgres

    url = os.environ.get("IM1_TEST_DATABASE_URL")
    if url:
        wh_url, af_url, maint = _scratch_databases(url)
        _SESSION["drop"] = (maint, [wh_url.rsplit("/", 1)[1], af_url.rsplit("/", 1)[1]])
        wh = Warehouse(admin_url=wh_url, embedded=False)
    else:
        server = EmbeddedPostgres(state / "pg", durable=False)
        server.ensure_started()
        _SESSION["server"] = server
        wh = Warehouse(admin_url=server.url("im1"), embedded=True)
        af_url = server.url("airflow")
    os.environ["IM1_WAREHOUSE_URL"] = wh.admin_url
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = af_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    bootstrap(wh)
    if not url:
        from im1.warehouse.bootstrap import ensure_database

        ensure_database(wh, "airflow")
    env = runtime.local_env(wh)
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    os.environ.update(env)
    os.environ["IM1_TEST_SESSION_READY"] = "1"
    _SESSION["warehouse"] = wh
    # the transform DAG loads the dbt manifest; build it if this is a bare `pytest` run
    manifest = ROOT / "dbt_project" / "target" / "manifest.json"
    if not manifest.exists():
        import fcntl

        with open(ROOT / "dbt_project" / ".parse.lock", "w") as lock:  # xdist workers start together
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not manifest.exists():
                subprocess.run([str(Path(sys.executable).parent / "dbt"), "parse", "--quiet"],
                               cwd=ROOT / "dbt_project", env={**os.environ, "DBT_PROFILES_DIR": "."}, check=True)
    res = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=os.environ.copy(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{res.stdout[-3000:]}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if "airflow.settings" in sys.modules:
        # close Airflow's pooled connections before the database goes away
        sys.modules["airflow.settings"].dispose_orm()
    server = _SESSION.pop("server", None)
    if server is not None:
        server.stop()
    drop = _SESSION.pop("drop", None)
    if drop:
        import psycopg
        from psycopg import sql

        maint, dbs = drop
        with psycopg.connect(maint, autocommit=True) as conn:
            for db in dbs:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db)))
    state = _SESSION.pop("state", None)
    if state is not None:
        shutil.rmtree(state, ignore_errors=True)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def warehouse():
    """The bootstrapped test warehouse (admin URL + role URLs)."""
    return _SESSION["warehouse"]


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return _SESSION["state"]


@pytest.fixture(scope="session")
def pgp_keys():
    """A consumer PGP key pair generated for this session (never stored in the repo)."""
    from im1.crypto import Keyring

    with Keyring(cache_passphrase=True) as kr:
        kp = kr.generate("IM1 test consumer", "test-consumer@example.invalid", "test-passphrase")
    return kp


@pytest.fixture(scope="session")
def other_pgp_keys():
    from im1.crypto import Keyring

    with Keyring(cache_passphrase=True) as kr:
        return kr.generate("Someone else", "someone-else@example.invalid", "other-passphrase")


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory):
    from im1dev.sftp_server import generate_ed25519, public_key_line

    d = tmp_path_factory.mktemp("ssh")
    host = generate_ed25519(d / "host")
    client = generate_ed25519(d / "client")
    other_host = generate_ed25519(d / "other_host")
    return {
        "host": host,
        "client": client,
        "client_file": d / "client",
        "host_line": public_key_line(host),
        "other_host": other_host,
    }


@pytest.fixture()
def sftp_server(tmp_path, ssh_keys):
    """A real SFTP server on loopback serving ``tmp_path / 'sftp'`` (key auth, fixed host key)."""
    from im1dev.sftp_server import SftpServer

    root = tmp_path / "sftp"
    root.mkdir()
    with SftpServer(root, host_key=ssh_keys["host"], username="supplier-test",
                    authorized_keys=[ssh_keys["client"]]) as srv:
        yield srv


@pytest.fixture()
def sftp_settings(sftp_server, ssh_keys):
    from im1.transport.sftp import SftpSettings

    return SftpSettings(host="127.0.0.1", port=sftp_server.port, username="supplier-test",
                        private_key=str(ssh_keys["client_file"]), host_key=ssh_keys["host_line"], timeout=10)


@pytest.fixture()
def db(warehouse):
    """An admin connection to the test warehouse (autocommit)."""
    import psycopg

    with psycopg.connect(warehouse.admin_url, autocommit=True) as conn:
        yield conn


# The longest test files first: with pytest-xdist (``-n``, one file per worker at a time) they then
# start at once on different workers instead of ending the run on one of them. Order only.
_SLOW_FIRST = ("tests/e2e/", "tests/distributed/", "tests/transform/", "tests/stack/test_stack_flow.py",
               "tests/integration/test_activity_models.py", "tests/dbt/", "tests/ingest/test_dag_reliability.py",
               "tests/ingest/test_multi_org.py")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    def rank(item) -> int:
        path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
        return next((i for i, prefix in enumerate(_SLOW_FIRST) if path.startswith(prefix)), len(_SLOW_FIRST))

    items.sort(key=rank)  # stable: the order inside each file is kept
