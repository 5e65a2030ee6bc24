"""Test session set-up: real PostgreSQL, real gpg, real SFTP, real Airflow.

Before anything imports Airflow, the session names its own state folder and database URLs. Once the
tests are collected, and only if a selected test is not marked ``unit``, it starts a PostgreSQL (a
fresh embedded cluster, or scratch databases on the server named by ``IM1_TEST_DATABASE_URL``),
bootstraps the warehouse and migrates the Airflow metadata database. Everything is torn down at the
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


def _xdist_controller(config: pytest.Config) -> bool:
    """True in the process that only hands tests to pytest-xdist workers (``-n``): it runs none."""
    return bool(getattr(config.option, "numprocesses", None)) and "PYTEST_XDIST_WORKER" not in os.environ


def pytest_configure(config: pytest.Config) -> None:
    """Name everything the session will use (state folder, database URLs, Airflow settings) before
    any test module imports Airflow; start nothing yet (see :func:`_start_services`)."""
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
    from im1dev import runtime
    from im1dev.embedded import EmbeddedPostgres, free_port

    url = os.environ.get("IM1_TEST_DATABASE_URL")
    if url:
        # scratch databases on a server someone else runs, named now, created when first needed
        suffix = uuid.uuid4().hex[:8]
        admin = Warehouse(admin_url=url)
        wh = Warehouse(admin_url=admin.url_for(f"im1_test_{suffix}"), embedded=False)
        af_url = admin.url_for(f"airflow_test_{suffix}")
        _SESSION["external"] = (admin.url_for("postgres"), [f"im1_test_{suffix}", f"airflow_test_{suffix}"])
    else:
        # the port is pinned now so that every URL is known before the server exists
        server = EmbeddedPostgres(state / "pg", durable=False, port=free_port())
        _SESSION["server"] = server
        wh = Warehouse(admin_url=server.url("im1"), embedded=True)
        af_url = server.url("airflow")
    os.environ["IM1_WAREHOUSE_URL"] = wh.admin_url
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = af_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    env = runtime.local_env(wh)
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    os.environ.update(env)
    os.environ["IM1_TEST_SESSION_READY"] = "1"
    _SESSION["planned_warehouse"] = wh


def _start_services() -> None:
    """PostgreSQL, the bootstrapped warehouse, the Airflow metadata database and the dbt manifest:
    started once per session (per xdist worker), and only when a selected test is not a unit test.
    ``airflow db migrate`` (the slowest part) runs while the warehouse is bootstrapped."""
    from im1.warehouse.bootstrap import bootstrap, ensure_database

    wh = _SESSION["planned_warehouse"]
    external = _SESSION.get("external")
    if external:
        import psycopg
        from psycopg import sql

        maint, dbs = external
        with psycopg.connect(maint, autocommit=True) as conn:
            for db in dbs:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
        _SESSION["drop"] = external
    else:
        _SESSION["server"].ensure_started()
        ensure_database(wh, "airflow")
    # the transform DAG loads the dbt manifest; build it if this is a bare `pytest` run
    manifest = ROOT / "dbt_project" / "target" / "manifest.json"
    if not manifest.exists():
        import fcntl

        with open(ROOT / "dbt_project" / ".parse.lock", "w") as lock:  # xdist workers start together
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not manifest.exists():
                subprocess.run([str(Path(sys.executable).parent / "dbt"), "parse", "--quiet"],
                               cwd=ROOT / "dbt_project", env={**os.environ, "DBT_PROFILES_DIR": "."}, check=True)
    migrate = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=os.environ.copy(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        bootstrap(wh)
    finally:
        out, _ = migrate.communicate()
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{out[-3000:]}")
    _SESSION["warehouse"] = wh


def pytest_unconfigure(config: pytest.Config) -> None:
    if "airflow.settings" in sys.modules:
        # close Airflow's pooled connections before the database goes away
        sys.modules["airflow.settings"].dispose_orm()
    server = _SESSION.pop("server", None)
    if server is not None:
        server.destroy()  # as root the cluster lives outside the state folder (see im1dev.embedded)
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
def warehouse(request):
    """The bootstrapped test warehouse (admin URL + role URLs)."""
    if "warehouse" not in _SESSION:
        pytest.fail(f"{request.node.nodeid} is marked unit (no services) but asks for the warehouse")
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
_SLOW_FIRST = ("tests/e2e/", "tests/distributed/", "tests/dbt/test_emis_daily_deltas.py",
               "tests/dbt/test_tpp_daily_deltas.py", "tests/dbt/test_activity_models.py", "tests/dbt/",
               "tests/stack/test_stack_flow.py", "tests/ingest/test_dag_reliability.py",
               "tests/ingest/test_multi_org.py")


# Lanes (markers): ``unit`` needs no service (no PostgreSQL, SFTP server or Airflow database; gpg and
# files are fine) and is set by the test module; ``e2e`` runs the real DAGs end to end; every other
# test is ``integration``. ``make test`` runs all three; ``make test-unit`` only the first.
_LANES = ("unit", "e2e")


def _is_unit(item: pytest.Item) -> bool:
    # a test of a unit module can still need a service: it is marked integration itself
    return item.get_closest_marker("unit") is not None and item.get_closest_marker("integration") is None


def pytest_itemcollected(item: pytest.Item) -> None:
    if not any(item.get_closest_marker(lane) for lane in _LANES):
        item.add_marker(pytest.mark.integration)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    def rank(item) -> int:
        path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
        return next((i for i, prefix in enumerate(_SLOW_FIRST) if path.startswith(prefix)), len(_SLOW_FIRST))

    items.sort(key=rank)  # stable: the order inside each file is kept


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # after `-m` has deselected: start the services only if a test that will run needs them
    if "planned_warehouse" not in _SESSION or "warehouse" in _SESSION:
        return
    if not all(_is_unit(item) for item in session.items):
        _start_services()
