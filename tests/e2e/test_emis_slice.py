"""End to end through the real DAGs: SFTP -> gpg -> COPY -> dbt (cosmos) -> list-size mart.

A synthetic EMIS practice is encrypted to a session key, served by a real SFTP server on
loopback, ingested by the feed's DAG with ``dag.test()`` and transformed by the cosmos DAG.
The mart must equal the synthetic supplier's ground truth exactly, and a re-run loads nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import pendulum
import psycopg
import pytest

from im1.crypto import Keyring
from im1.synth import supplier, truth
from im1.synth.world import build_world
from im1.warehouse import BI_READER

pytestmark = pytest.mark.e2e

ODS = "Z99101"
ORG_GUID = "{0B1C2D3E-4F50-4617-8899-AABBCCDDEEF1}"
AGREEMENT = "3E4F5061-7283-4495-A6B7-C8D9E0F10213"
FEED = "emis_z99101"


@pytest.fixture()
def feed_env(tmp_path, monkeypatch, sftp_server, ssh_keys, pgp_keys):
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(textwrap.dedent(f"""
        version: 1
        feeds:
          - id: {FEED}
            supplier: emis
            transport: {{kind: sftp, host: 127.0.0.1, port: {sftp_server.port}, path: /IM1/sftp/{AGREEMENT},
                         conn_id: e2e_sftp}}
            pgp_conn_id: e2e_pgp
            sharing_agreement_guid: {AGREEMENT}
            organisations: [{{ods_code: {ODS}, supplier_org_id: "{ORG_GUID}"}}]
            retries: 0
    """))
    monkeypatch.setenv("IM1_FEEDS_FILE", str(feeds))
    monkeypatch.setenv("AIRFLOW_CONN_E2E_SFTP", json.dumps({
        "conn_type": "sftp", "login": "supplier-test",
        "extra": {"key_file": str(ssh_keys["client_file"]), "host_key": ssh_keys["host_line"]},
    }))
    keyfile = tmp_path / "pgp_secret.asc"
    keyfile.write_text(pgp_keys.secret_armored)
    monkeypatch.setenv("AIRFLOW_CONN_E2E_PGP", json.dumps({
        "conn_type": "generic", "password": pgp_keys.passphrase, "extra": {"private_key_file": str(keyfile)},
    }))
    return sftp_server


def _publish(world, root, day, pgp_keys):
    with Keyring() as kr:
        kr.import_key(pgp_keys.public_armored)
        return supplier.publish_emis_day(world, day, root / "IM1" / "sftp" / AGREEMENT, keyring=kr,
                                         recipient=pgp_keys.fingerprint).files


def _dags():
    from airflow.dag_processing.dagbag import DagBag

    from im1 import paths

    bag = DagBag(dag_folder=str(paths.dags_dir()))
    assert bag.import_errors == {}
    return bag.get_dag(f"im1_ingest__{FEED}"), bag.get_dag("im1_transform")


def _raw_rows(db):
    return db.execute("select count(*) from raw_emis.admin_patient where _feed_id = %s", (FEED,)).fetchone()[0]


def test_demo_slice_end_to_end(feed_env, pgp_keys, warehouse, db):
    world = build_world(seed=2024, patients_per_practice=150, ods_codes=[ODS], org_guids={ODS: ORG_GUID},
                        agreement_guid=AGREEMENT, start=dt.date(2026, 11, 1), years=1)
    files = _publish(world, feed_env.root, 0, pgp_keys)
    assert len(files) == 21 and all(f.name.endswith(".csv.gpg") for f in files)

    ingest, transform = _dags()
    run = ingest.test(logical_date=pendulum.datetime(2026, 11, 2, 6, tz="Europe/London"))
    assert run.state == "success"
    patients_in_extract = sum(1 for p in world.patients if p.reg_date <= world.start)  # the bulk's data date
    assert _raw_rows(db) == patients_in_extract
    batch = db.execute("select status, rows_loaded, schema_version, file_count from ingest.batches "
                       "where feed_id = %s", (FEED,)).fetchone()
    assert batch[0] == "loaded" and batch[2] == "8.2" and batch[3] == 21

    run = transform.test(logical_date=pendulum.datetime(2026, 11, 2, 6, tz="Europe/London"))
    assert run.state == "success"

    with psycopg.connect(warehouse.role_url(BI_READER)) as bi:
        rows = bi.execute("select practice_code, snapshot_date, sex, age_band, patients "
                          "from marts.mart_list_size where practice_code = %s", (ODS,)).fetchall()
    snapshot = rows[0][1]
    got = {(r[2], r[3]): r[4] for r in rows}
    want = {(e["sex"], e["age_band"]): e["patients"] for e in truth.list_size(world, snapshot, as_of=world.start)}
    assert got == want and sum(got.values()) > 100

    # a re-run of the same interval finds nothing new: nothing fetched again, nothing doubled
    run = ingest.test(logical_date=pendulum.datetime(2026, 11, 2, 6, tz="Europe/London"))
    assert run.state == "success"
    assert _raw_rows(db) == patients_in_extract
