"""End to end through the real DAGs: SFTP -> gpg -> COPY -> dbt (cosmos) -> marts.

A synthetic EMIS practice is encrypted to a session key, served by a real SFTP server on
loopback, ingested by the feed's DAG with ``dag.test()`` and transformed by the cosmos DAG's
``dbt build`` and docs tasks (its per-model watcher tasks run in tests/distributed): the bulk, then
a daily delta (the incremental models' path). After each day every mart must equal the
synthetic supplier's ground truth for that data date exactly (im1dev.reconcile: list size, QOF
registers and indicators, appointments, prescribing), a re-run loads nothing, and BI reads only the
suppressed published variants.
The same runs must leave the dbt docs site for the UI and OpenLineage events (the session's
file transport) that chain delivered file -> archived copy -> raw table -> staging -> mart.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import pendulum
import psycopg
import pytest

from im1.crypto import Keyring
from im1.warehouse import BI_READER, MART_READER
from im1dev import reconcile
from im1dev.synth import casebook, supplier, truth
from im1dev.synth.world import build_world

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


def _build(transform, *, logical_date, docs: bool = False):
    """The transform DAG's work under ``dag.test()``: its one ``dbt build`` (the watcher mode's
    producer, which also emits the per-model lineage) and, with ``docs``, then the docs site. The
    ~260 watcher tasks that only report each model's result from the producer's XCom are left out:
    run one by one in this process they took most of the test's time, and the distributed test
    runs them through a real scheduler and worker. ``transform`` must be freshly parsed (a DAG that
    ran under dag.test() holds modules that deepcopy refuses)."""
    ids = ["dbt.dbt_producer_watcher", *(["dbt_docs"] if docs else [])]
    dag = transform.partial_subset(ids, include_upstream=False)
    assert set(dag.task_ids) == set(ids)
    if docs:
        dag.task_dict["dbt.dbt_producer_watcher"] >> dag.task_dict["dbt_docs"]
    return dag.test(logical_date=logical_date)


def _lineage_events(before: set[str]) -> list[dict]:
    from im1 import paths

    return [json.loads(p.read_text()) for p in sorted(paths.lineage_dir().glob("event-*.json"))
            if p.name not in before]


def _complete(events: list[dict], job: str) -> dict:
    [event] = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"] == job]
    return event


def _datasets(event: dict, side: str) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in event.get(side, [])}


def _check_lineage(events: list[dict], sftp_port: int, warehouse) -> None:
    pg = f"postgres://{warehouse.host}:{warehouse.port}"
    db = warehouse.database
    fetch = _complete(events, f"im1_ingest__{FEED}.fetch")
    [(src_ns, src)] = [d for d in _datasets(fetch, "inputs") if "_Admin_Patient_" in d[1]]
    assert src_ns == f"file://127.0.0.1:{sftp_port}" and src.startswith(f"IM1/sftp/{AGREEMENT}/")
    [(arch_ns, archived)] = [d for d in _datasets(fetch, "outputs") if "_Admin_Patient_" in d[1]]
    assert arch_ns == "file" and archived.endswith(src.rsplit("/", 1)[1])
    assert len(_datasets(fetch, "inputs")) == len(_datasets(fetch, "outputs")) == 21
    load = _complete(events, f"im1_ingest__{FEED}.organisation.load")
    assert ("file", archived) in _datasets(load, "inputs")
    assert (pg, f"{db}.raw_emis.admin_patient") in _datasets(load, "outputs")
    assert len(_datasets(load, "outputs")) == 21
    # each task reports only its own lineage (one process runs the whole dag.test())
    quality = _complete(events, f"im1_ingest__{FEED}.organisation.quality")
    assert not _datasets(quality, "inputs") and not _datasets(quality, "outputs")
    # dbt, model by model, as child runs of the `dbt build` task
    producer = _complete(events, "im1_transform.dbt.dbt_producer_watcher")
    stg = _complete(events, "dbt.model.im1.stg_emis__admin_patient")
    assert (pg, f"{db}.raw_emis.admin_patient") in _datasets(stg, "inputs")
    assert _datasets(stg, "outputs") == {(pg, f"{db}.staging.stg_emis__admin_patient")}
    patients = _complete(events, "dbt.model.im1.int_patients")
    assert (pg, f"{db}.staging.stg_emis__admin_patient") in _datasets(patients, "inputs")
    assert _datasets(patients, "outputs") == {(pg, f"{db}.intermediate.int_patients")}
    mart = _complete(events, "dbt.model.im1.mart_list_size")
    assert (pg, f"{db}.intermediate.int_patients") in _datasets(mart, "inputs")
    assert not any(".raw_emis." in name or ".staging." in name for _, name in _datasets(mart, "inputs"))
    assert _datasets(mart, "outputs") == {(pg, f"{db}.marts.mart_list_size")}
    parent = mart["run"]["facets"]["parent"]
    assert parent["job"]["name"] == "im1_transform.dbt.dbt_producer_watcher"
    assert parent["run"]["runId"] == producer["run"]["runId"]
    assert {f["name"] for f in mart["outputs"][0]["facets"]["schema"]["fields"]} >= {"practice_code", "patients"}


def _check_dbt_docs() -> None:
    from im1 import paths

    site = paths.dbt_docs_dir()
    assert "mart_list_size" in (site / "static_index.html").read_text()
    catalog = json.loads((site / "catalog.json").read_text())
    assert "model.im1.mart_list_size" in catalog["nodes"]
    assert (site / "manifest.json").exists() and (site / "index.html").exists()


def _raw_rows(db):
    return db.execute("select count(*) from raw_emis.admin_patient where _feed_id = %s", (FEED,)).fetchone()[0]


def _reconcile(warehouse, world, day: int) -> dict[str, reconcile.Diff]:
    """Every mart vs the ground truth of the day's data date, read as the restricted mart reader."""
    with psycopg.connect(warehouse.role_url(MART_READER)) as reader:
        diffs = reconcile.compare(reader, truth.compute(world, world.data_dates()[day]))
    reconcile.report(diffs)
    return diffs


def _extract_run(day: int) -> pendulum.DateTime:
    # the run whose data interval ends at 06:00 on the extract day (data date + 1) loads that extract
    return pendulum.datetime(2026, 11, 2 + day, 6, tz="Europe/London")


def test_demo_slice_end_to_end(feed_env, pgp_keys, warehouse, db):
    world = build_world(seed=2024, patients_per_practice=150, ods_codes=[ODS], org_guids={ODS: ORG_GUID},
                        agreement_guid=AGREEMENT, start=dt.date(2026, 11, 1), years=1, days=2)
    files = _publish(world, feed_env.root, 0, pgp_keys)
    assert len(files) == 21 and all(f.name.endswith(".csv.gpg") for f in files)

    from im1 import paths

    before = {p.name for p in paths.lineage_dir().glob("event-*.json")}
    ingest, transform = _dags()
    run = ingest.test(logical_date=_extract_run(0))
    assert run.state == "success"
    patients_in_extract = sum(1 for p in world.patients if p.reg_date <= world.start)  # the bulk's data date
    assert _raw_rows(db) == patients_in_extract
    batch = db.execute("select status, rows_loaded, schema_version, file_count from ingest.batches "
                       "where feed_id = %s", (FEED,)).fetchone()
    assert batch[0] == "loaded" and batch[2] == "8.2" and batch[3] == 21

    run = _build(transform, logical_date=_extract_run(0), docs=True)
    assert run.state == "success"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["dbt_docs"] == "success"
    _check_dbt_docs()
    _check_lineage(_lineage_events(before), feed_env.port, warehouse)

    diffs = _reconcile(warehouse, world, 0)
    assert {"mart_list_size", "mart_qof_registers", "mart_qof_indicators"} <= set(diffs)
    assert all(d.ok for d in diffs.values()), {k: d.summary() for k, d in diffs.items()}
    with psycopg.connect(warehouse.role_url(MART_READER)) as bi:
        snapshots = bi.execute("select snapshot_date, sum(patients) from marts.mart_list_size "
                               "where practice_code = %s group by 1 order by 1", (ODS,)).fetchall()
        registers = dict(bi.execute("select register, register_count from marts.mart_qof_registers "
                                    "where practice_code = %s and reference_date = '2026-03-31'", (ODS,)).fetchall())
        kinds = dict(bi.execute("select reference_kind, count(distinct reference_date) from marts.mart_qof_indicators "
                                "where practice_code = %s group by 1", (ODS,)).fetchall())
    # 13 first-of-month snapshots ending in the data date's month; the list as truth counts it
    assert [s for s, _n in snapshots] == truth.snapshot_dates(world.start)
    assert snapshots[-1][1] == sum(r["patients"] for r in truth.list_size(world, world.start.replace(day=1),
                                                                          as_of=world.start)) > 100
    assert len(registers) == 8 and registers["HYP001"] > 0
    # QOF on the achievement dates of three QOF years and the month-ends of the current one
    assert kinds == {"achievement": 3, "month_end": 7}
    # every planted casebook case came through the real ingest as the rule text says
    with psycopg.connect(warehouse.admin_url) as conn:
        check = casebook.check_warehouse(conn, [world])
    print(check.summary())
    assert check.ok, "\n".join(check.mismatches)
    assert check.checked["emis"] == (sum(1 for p in world.patients if p.case) - len(check.not_covered)
                                     - len(check.other_areas)) > 100

    # a re-run of the same interval finds nothing new: nothing fetched again, nothing doubled
    run = ingest.test(logical_date=_extract_run(0))
    assert run.state == "success"
    assert _raw_rows(db) == patients_in_extract

    # the next day's delta goes through the incremental models (only the rows it changed)
    _publish(world, feed_env.root, 1, pgp_keys)
    assert ingest.test(logical_date=_extract_run(1)).state == "success"
    assert _build(_dags()[1], logical_date=_extract_run(1)).state == "success"
    diffs = _reconcile(warehouse, world, 1)
    assert set(diffs) == {"mart_list_size", "mart_list_size_single_age", "mart_qof_registers", "mart_qof_indicators",
                          "mart_appointments", "mart_prescribing", "mart_prescribing_bnf"}
    assert all(d.ok for d in diffs.values()), {k: d.summary() for k, d in diffs.items()}
    assert diffs["mart_appointments"].rows > 20 and diffs["mart_prescribing"].rows > 20
    watermark = db.execute("select applied_at from staging.im1_watermarks where model = 'int_observations'").fetchone()
    assert watermark is not None

    # BI reads the suppressed variants in published, and cannot read the marts
    with psycopg.connect(warehouse.role_url(BI_READER)) as bi:
        rows = bi.execute("select appointments, is_suppressed from published.pub_appointments "
                          "where practice_code = %s", (ODS,)).fetchall()
        assert rows and all((n is None) == s and (n is None or n % 5 == 0) for n, s in rows)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bi.execute("select * from marts.mart_appointments")
