"""Multi-organisation EMIS feeds: one file per table for every practice, split per organisation."""

from __future__ import annotations

import pendulum

from im1.ingest.pipeline import Pipeline
from im1.transport.sftp import SftpClient
from tests.ingest.conftest import START, batches, events, ingest_dag, raw_count

ODS = ["Z91001", "Z91002", "Z91003", "Z91004"]  # Z91003 is in the agreement but not configured
ACTIVE = ["Z91001", "Z91002", "Z91003"]  # Z91004 is in the agreement, not activated (sends no data)


def _expected_patients(world, ods):
    return sum(1 for p in world.patients if p.ods_code == ods and p.reg_date <= START)


def test_core_stage_and_split(site, loader):
    world = site.world(ODS, inactive=["Z91004"])
    site.publish(world, 0)
    feed = site.feed("emis_multi_core", ["Z91001", "Z91002"], extract="multi_organisation")
    pipe = Pipeline(feed, site.loader_url, key=site.pgp)
    with SftpClient(site.sftp_settings()) as c:
        found = pipe.discover(c)
        assert [b.batch_key for b in found.ready] == ["bulk_000001@20261102020000"]
        fetched = pipe.fetch(c, found.ready[0])
    staged = pipe.stage(fetched)
    assert staged["staged"] and staged["shared_rows"] > 0
    assert pipe.stage(fetched)["staged"] is False  # once per delivery
    for ods in ("Z91001", "Z91002"):
        r = pipe.load(ods, fetched)
        assert r.status == "loaded"
        assert raw_count(loader, "admin_patient", feed.id, ods) == _expected_patients(world, ods)
    assert [r[:3] for r in batches(loader, feed.id)] == [
        ("*", "bulk_000001@20261102020000", "loaded"), ("Z91001", "bulk_000001@20261102020000", "loaded"),
        ("Z91002", "bulk_000001@20261102020000", "loaded")]
    # every practice loaded: the staging tables are gone
    assert loader.execute("select count(*) from pg_tables where schemaname = 'stage_emis'").fetchone() == (0,)
    assert loader.execute("select count(*) from ingest.events where feed_id = %s and level = 'error'",
                          (feed.id,)).fetchone() == (0,)


def _asset_events(dag_id: str) -> list[tuple[str, dict]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as s:
        rows = (s.query(AssetModel.name, AssetEvent.extra).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetEvent.source_dag_id == dag_id).order_by(AssetEvent.id).all())
    return [(n, e) for n, e in rows]


def test_multi_org_dag_fans_out_per_practice(site, loader):
    world = site.world(ODS, inactive=["Z91004"])
    site.publish(world, 0)
    # Z91004 is configured but not activated in the agreement: it gets no rows (and no Asset event)
    feed = site.feed("emis_multi_dag", ["Z91001", "Z91002", "Z91004"], extract="multi_organisation")
    dag = ingest_dag(feed.id)
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 2, 6, tz="Europe/London"))
    assert run.state == "success"
    labels = {ti.rendered_map_index for ti in run.get_task_instances() if ti.task_id == "organisation.load"}
    assert labels == {"Z91001", "Z91002", "Z91004", "*"}
    assert raw_count(loader, "admin_patient", feed.id, "Z91004") == 0
    assert any("Z91004" in e and "not activated" in e for e in events(loader, feed.id))
    for ods in ("Z91001", "Z91002"):
        assert raw_count(loader, "admin_patient", feed.id, ods) == _expected_patients(world, ods)
    # shared tables once per delivery, as organisation '*'
    assert raw_count(loader, "admin_organisation", feed.id) == raw_count(loader, "admin_organisation", feed.id, "*") == 3
    assert raw_count(loader, "agreements_sharingorganisation", feed.id, "*") == 4
    # rows of the practice in the agreement but not configured: not loaded, not lost
    unclaimed = loader.execute(
        "select u.table_name, u.organisation_guid, u.rows, u.in_agreement, u.is_activated from ingest.unclaimed_rows u "
        "join ingest.batches b using (batch_id) where b.feed_id = %s", (feed.id,)).fetchall()
    z3 = world.practice("Z91003").org_guid
    # everything unclaimed is the unconfigured practice's (SessionUser rows have no OrganisationGuid of
    # their own: they are unclaimed as sessions of no configured practice)
    assert {(r[1], r[3], r[4]) for r in unclaimed if r[0] != "Appointment_SessionUser"} == {(z3, True, True)}
    assert {r[1] for r in unclaimed if r[0] == "Appointment_SessionUser"} <= {"(session of no configured practice)"}
    assert ("Admin_Patient", z3, _expected_patients(world, "Z91003"), True, True) in unclaimed
    assert {r[0] for r in unclaimed} >= {"Admin_Patient", "CareRecord_Observation", "Appointment_Slot"}
    loaded = sum(_expected_patients(world, o) for o in ("Z91001", "Z91002"))
    assert raw_count(loader, "admin_patient", feed.id) == loaded
    # staging is gone, every batch passed its quality checks
    assert loader.execute("select count(*) from pg_tables where schemaname = 'stage_emis'").fetchone() == (0,)
    assert [r[:3] for r in batches(loader, feed.id)] == [
        ("*", "bulk_000001@20261102020000", "loaded"), ("Z91001", "bulk_000001@20261102020000", "loaded"),
        ("Z91002", "bulk_000001@20261102020000", "loaded"), ("Z91004", "bulk_000001@20261102020000", "loaded")]
    assert {r[0] for r in loader.execute("select quality_status from ingest.batches where feed_id = %s",
                                         (feed.id,))} == {"passed"}
    names = sorted(n for n, _ in _asset_events(dag.dag_id))
    assert names == [f"im1_raw__{feed.id}__Z91001", f"im1_raw__{feed.id}__Z91002", f"im1_raw__{feed.id}__shared"]
    # a second run finds nothing new and publishes nothing
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 2, 6, tz="Europe/London"))
    assert run.state == "success"
    assert raw_count(loader, "admin_patient", feed.id) == loaded
    assert len(_asset_events(dag.dag_id)) == 3


def test_a_bad_per_practice_file_quarantines_the_whole_delivery(site, loader):
    from im1.ingest import status
    from im1.ingest.errors import QuarantineError
    from im1dev.synth import faults
    from tests.ingest.conftest import run_core

    world = site.world(ODS, inactive=["Z91004"])
    folder = site.publish(world, 0)
    good = faults.table_file(folder, "Admin_Patient").read_bytes()
    faults.malform_row(folder, "Admin_Patient", site.keys, row=3)
    feed = site.feed("emis_multi_bad", ["Z91001", "Z91002"], extract="multi_organisation")
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError) and "every organisation" in str(err)
    rows = batches(loader, feed.id)
    assert [(r[0], r[2]) for r in rows] == [("*", "quarantined"), ("Z91001", "quarantined"),
                                            ("Z91002", "quarantined")]
    assert all("unterminated CSV quoted field" in r[5] and "Admin_Patient" in r[5] for r in rows)
    assert raw_count(loader, "admin_patient", feed.id) == 0
    assert raw_count(loader, "admin_organisation", feed.id) == 0  # shared tables too: all or nothing
    assert loader.execute("select count(*) from pg_tables where schemaname = 'stage_emis'").fetchone() == (0,)
    # re-delivered and released (one practice's batch releases the whole delivery)
    faults.table_file(folder, "Admin_Patient").write_bytes(good)
    z1 = loader.execute("select batch_id from ingest.batches where feed_id = %s and organisation = 'Z91001'",
                        (feed.id,)).fetchone()[0]
    import psycopg

    with psycopg.connect(site.loader_url) as conn:
        message = status.release(conn, z1, "re-delivered")
    assert message.count("was quarantined") == 3
    results = run_core(site, feed)
    assert [r.status for r in results] == ["loaded", "loaded"]
    for ods in ("Z91001", "Z91002"):
        assert raw_count(loader, "admin_patient", feed.id, ods) == _expected_patients(world, ods)
    assert raw_count(loader, "admin_organisation", feed.id, "*") == 3
    assert any("Z91003" not in e and "not loaded" in e for e in events(loader, feed.id))
