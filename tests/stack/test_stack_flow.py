"""The Compose stack's own commands, run on this machine without Docker.

The ``airflow-init`` script and the ``supplier-sftp`` command are taken from docker-compose.yaml,
with the environment the file gives those services (values from .env.example). Only what
differs on this machine is replaced: the servers' addresses (the session's PostgreSQL instead of
the ``postgres``/``warehouse`` services, loopback instead of ``supplier-sftp``) and the image's
paths. Then the demo feed's real ingest DAG fetches what the init step generated, from the SFTP
server the stack runs, with the keys and connections the init step made, into the warehouse the
init step bootstrapped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from im1dev.embedded import free_port
from tests.stack.compose import ROOT, env_example, service_env, service_script

FEED = "emis_z90001"  # the demo feeds of include/feeds.yaml
TPP_FEED = "tpp_z90002"
PATIENTS = 60

pytestmark = pytest.mark.e2e


@pytest.fixture()
def stack(tmp_path, warehouse):
    """The environment of the stack's services, moved onto this machine (own warehouse and metadata DBs)."""
    suffix = uuid.uuid4().hex[:8]
    wh_db, af_db = f"im1_stack_{suffix}", f"airflow_stack_{suffix}"
    maint = warehouse.url_for("postgres")
    with psycopg.connect(maint, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(af_db)))
        had_metabase = conn.execute("select 1 from pg_database where datname = 'metabase'").fetchone()
    host, port = warehouse.host, warehouse.port
    state, supplier, home = tmp_path / "state", tmp_path / "supplier", tmp_path / "airflow"
    image_paths = {"/var/lib/im1": str(state), "/srv/supplier": str(supplier), "/opt/airflow": str(home),
                   "/opt/im1": str(ROOT)}
    sftp_port = free_port()

    def localise(env: dict[str, str]) -> dict[str, str]:
        out = {}
        for k, v in env.items():
            for image_path, here in image_paths.items():
                v = v.replace(image_path, here)
            v = v.replace("@warehouse:5432/im1", f"@{host}:{port}/{wh_db}")
            out[k] = v
        out.update({
            # the Dockerfile's ENV, on this machine
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8",
            "AIRFLOW_HOME": str(home), "IM1_PROJECT_ROOT": str(ROOT), "IM1_STATE_DIR": str(state),
            "IM1_SUPPLIER_DIR": str(supplier),
            # the servers: the session's PostgreSQL (trust on loopback) and loopback for the supplier
            "IM1_WAREHOUSE_URL": warehouse.url_for(wh_db),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
                warehouse.url_for(af_db).replace("postgresql://", "postgresql+psycopg2://", 1),
            "IM1_DEMO_SFTP_HOST": "127.0.0.1", "IM1_DEMO_SFTP_PORT": str(sftp_port), "IM1_SFTP_LISTEN": "127.0.0.1",
            "IM1_SFTP_PORT": str(sftp_port),
            "IM1_DEMO_PATIENTS": str(PATIENTS), "IM1_DEMO_DAYS": "1",
        })
        # role passwords are cluster-wide: keep the session server's roles as they are
        for role in ("LOADER", "TRANSFORMER", "BI_READER", "MART_READER"):
            out.pop(f"IM1_{role}_PASSWORD", None)
        return out

    yield {"localise": localise, "state": state, "supplier": supplier, "wh_db": wh_db, "af_db": af_db,
           "sftp_port": sftp_port, "tmp": tmp_path}
    with psycopg.connect(maint, autocommit=True) as conn:
        dbs = [wh_db, af_db] + ([] if had_metabase else ["metabase"])
        for db in dbs:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db)))


def run(script: str, env: dict[str, str], timeout: float = 300) -> str:
    res = subprocess.run(["bash", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=timeout, cwd=str(ROOT))
    assert res.returncode == 0, res.stdout[-4000:]
    return res.stdout


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"supplier-sftp exited: {proc.stdout.read() if proc.stdout else ''}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    proc.terminate()
    raise TimeoutError(f"supplier-sftp did not listen on {port}: {proc.communicate(timeout=10)[0]}")


def test_init_then_supplier_then_ingest_as_the_stack_runs_them(stack, warehouse):
    from im1.config import load_config
    from im1dev import demo
    from im1dev.synth.world import World

    init_env = stack["localise"](service_env("airflow-init"))
    out = run(service_script("airflow-init"), init_env)
    assert "warehouse" in out and "bootstrapped" in out and "airflow-init: done" in out, out

    state, supplier = stack["state"], stack["supplier"]
    # the Airflow admin's login, from .env
    assert json.loads((state / "secrets" / "airflow_passwords.json").read_text()) == {
        env_example()["AIRFLOW_ADMIN_USER"]: env_example()["AIRFLOW_ADMIN_PASSWORD"]}
    # demo keys generated at run time; the supplier got only public material and its own host key
    keys = state / "demo" / "keys"
    assert (keys / "pgp_secret.asc").exists() and (keys / "ssh_client_ed25519").exists()
    assert sorted(p.name for p in (supplier / "keys").iterdir()) == [
        "authorized_client_ed25519.pub", "consumer_pgp_public.asc", "ssh_host_ed25519"]
    assert "PRIVATE KEY BLOCK" not in (supplier / "keys" / "consumer_pgp_public.asc").read_text()
    conns = json.loads((state / "secrets" / "connections.json").read_text())
    assert conns[f"im1_sftp_{FEED}"]["port"] == stack["sftp_port"]
    assert conns[f"im1_sftp_{FEED}"]["extra"]["host_key"].startswith("ssh-ed25519 ")
    # the synthetic bulk, encrypted, where the feed's path says
    cfg_env = {**os.environ, **{k: init_env[k] for k in ("IM1_DEMO_SFTP_HOST", "IM1_DEMO_SFTP_PORT")}}
    os.environ.update(cfg_env)
    try:
        feed = load_config(ROOT / "include" / "feeds.yaml").feed(FEED)
    finally:
        for k in ("IM1_DEMO_SFTP_HOST", "IM1_DEMO_SFTP_PORT"):
            os.environ.pop(k, None)
    files = list((supplier / "sftp" / feed.transport.path.strip("/")).rglob("*.csv.gpg"))
    assert len(files) == 21
    assert list((state / "tpp-gateway").glob("*/SRManifest.csv")), "the TPP gateway folder was not seeded"
    assert (state / "docs" / "dbt").is_dir() and (state / "lineage").is_dir()
    # pools and the metadata database
    with psycopg.connect(warehouse.url_for(stack["af_db"])) as conn:
        pools = dict(conn.execute("select pool, slots from slot_pool").fetchall())
    assert pools.get(feed.pool) == 4
    fingerprint = (keys / "pgp_fingerprint").read_text()

    # again: nothing changes (keys kept, deliveries not regenerated)
    out = run(service_script("airflow-init"), init_env)
    assert (keys / "pgp_fingerprint").read_text() == fingerprint
    assert "im1 synth" not in out and "files," not in out
    assert len(list((supplier / "sftp" / feed.transport.path.strip("/")).rglob("*.csv.gpg"))) == 21

    sftp = subprocess.Popen(["bash", "-c", service_script("supplier-sftp")],
                            env=stack["localise"](service_env("supplier-sftp")), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_port(stack["sftp_port"], sftp)
        worker_env = stack["localise"](service_env("airflow-worker"))
        worker_env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"  # `dags test` runs the tasks in-process
        # the morning after the bulk's data date: the EMIS extract (02:00) and the TPP cut-off (midnight)
        logical = dt.datetime.combine(World.extract_ts(demo.DEMO_START).date(), dt.time(6),
                                      tzinfo=ZoneInfo("Europe/London"))
        for dag_id in (feed.dag_id, f"im1_ingest__{TPP_FEED}"):
            res = subprocess.run(["airflow", "dags", "test", dag_id, logical.isoformat()], env=worker_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                                 cwd=str(stack["tmp"]))
            ok = res.returncode == 0 and "DagRun Finished" in res.stdout and "state=failed" not in res.stdout
            assert ok, f"{dag_id}:\n{res.stdout[-4000:]}"
    finally:
        sftp.terminate()
        sftp.wait(timeout=10)

    # the world `im1 synth --feed` generated (its defaults: seed 42, start 2026-11-01, 5 years)
    world = demo.world_for(feed, days=1, patients=PATIENTS, seed=42, start=dt.date(2026, 11, 1), years=5.0)
    want = sum(1 for p in world.patients if p.reg_date <= world.start)
    with psycopg.connect(warehouse.url_for(stack["wh_db"])) as conn:
        got = conn.execute("select count(*) from raw_emis.admin_patient where _feed_id = %s", (FEED,)).fetchone()[0]
        status = conn.execute("select status from ingest.batches where feed_id = %s", (FEED,)).fetchall()
        tpp_rows = conn.execute("select count(*) from raw_tpp.srpatient where _feed_id = %s",
                                (TPP_FEED,)).fetchone()[0]
        tpp_status = conn.execute("select status from ingest.batches where feed_id = %s", (TPP_FEED,)).fetchall()
    assert got == want and status == [("loaded",)]
    # the TPP demo feed read the gateway folder init filled on the shared state volume
    assert tpp_rows > 0 and tpp_status == [("loaded",)]
