"""Great Expectations checks per raw batch, generated from the spec; results in the ledger and Data Docs."""

from __future__ import annotations

import pytest

from im1 import specs
from im1.ingest import quality
from tests.ingest.conftest import START, batches, raw_count, run_core

ODS = "Z91301"


def test_checks_are_planned_from_the_spec():
    plan = {(c.expectation, c.column): c for c in quality.plan_checks("Admin_Patient")}
    assert ("expect_table_row_count_to_equal", None) in plan
    # key GUIDs must be present and braced upper case; other GUID columns may be empty
    assert plan[("expect_column_values_to_match_regex", "patientguid")].regex == quality.GUID
    assert plan[("expect_column_values_to_not_be_null", "patientguid")]
    assert plan[("expect_column_values_to_match_regex", "usualgpuserinroleguid")].regex == quality.GUID_OR_EMPTY
    assert plan[("expect_column_values_to_match_regex", "dateofbirth")].regex == quality.DATE_OR_EMPTY
    # every uniqueidentifier and date column of every table is covered, for each spec version
    for version in specs.EMIS_VERSIONS:
        for name, t in specs.emis_tables().items():
            checked = {c.column for c in quality.plan_checks(name, version)
                       if c.expectation == "expect_column_values_to_match_regex"}
            typed = {c.raw_name for c in t.columns(version)
                     if c.effective_type in ("uniqueidentifier", "date", "datetime")}
            assert checked == typed, name
            assert {specs.raw_column_name(k) for k in t.keys or ()} <= {c.raw_name for c in t.columns(version)}, name
    coding = {(c.expectation, c.column) for c in quality.plan_checks("Coding_ClinicalCode")}
    assert ("expect_column_values_to_not_match_regex", "codeid") in coding  # a non-GUID key: not empty


def test_a_good_batch_passes_and_every_result_is_stored(site, loader):
    world = site.world([ODS])
    site.publish(world, 0)
    feed = site.feed("emis_quality_ok", [ODS])
    [ok] = run_core(site, feed)
    results = quality.check_batches([ok.batch_id], site.loader_url)
    assert [r.success for r in results] == [True]
    stored = loader.execute("select table_name, expectation, column_name, success, observed_value from "
                            "ingest.quality_checks where batch_id = %s", (ok.batch_id,)).fetchall()
    assert len(stored) == results[0].checks and all(r[3] for r in stored)
    assert {r[0] for r in stored} == set(specs.emis_tables())  # every table of the batch
    count = next(r for r in stored if r[0] == "Admin_Patient" and r[1] == "expect_table_row_count_to_equal")
    assert count[4]["observed_value"] == raw_count(loader, "admin_patient", feed.id)
    assert quality.data_docs_index().exists()
    assert loader.execute("select quality_status from ingest.batches where batch_id = %s",
                          (ok.batch_id,)).fetchone() == ("passed",)
    assert quality.check_batches([ok.batch_id], site.loader_url) == []  # checked once


def test_a_failed_check_quarantines_the_batch_and_removes_it_from_raw(site, loader, db):
    world = site.world([ODS])
    site.publish(world, 0)
    feed = site.feed("emis_quality_bad", [ODS])
    [ok] = run_core(site, feed)
    bid = ok.batch_id
    # what a buggy supplier or loader could produce: a lower-case GUID, a non-ISO date, a lost row
    # (the loader itself cannot update raw rows, so the admin plants them)
    db.execute("update raw_emis.admin_patient set patientguid = lower(patientguid) where _batch_id = %s "
                   "and _row_number = 1", (bid,))
    db.execute("update raw_emis.admin_patient set dateofbirth = '01/02/1990' where _batch_id = %s "
                   "and _row_number = 2", (bid,))
    loader.execute("delete from raw_emis.admin_location where _batch_id = %s", (bid,))
    with pytest.raises(quality.QualityError) as err:
        quality.check_batches([bid], site.loader_url)
    text = str(err.value)
    assert "Admin_Patient.patientguid: 1 badly formatted value(s) (record 1 of the file)" in text
    assert "Admin_Patient.dateofbirth: 1 badly formatted value(s) (record 2 of the file)" in text
    assert "Admin_Location: 0 row(s) in raw but 1 in the file" in text
    # the failing value is patient data: it is in no error, no stored result and no Data Docs page
    assert "01/02/1990" not in text
    stored = " ".join(str(r) for r in loader.execute("select observed_value from ingest.quality_checks"))
    assert "01/02/1990" not in stored and "'records': [2]" in stored
    gx_files = [p for p in quality.gx_root().rglob("*") if p.is_file()]
    assert gx_files and not [p for p in gx_files if b"01/02/1990" in p.read_bytes()]
    failed = loader.execute("select table_name, column_name from ingest.quality_checks where batch_id = %s "
                            "and not success order by 1, 2", (bid,)).fetchall()
    assert failed == [("Admin_Location", None), ("Admin_Patient", "dateofbirth"), ("Admin_Patient", "patientguid")]
    [(org, key, status, rows, late, error)] = batches(loader, feed.id)
    assert status == "quarantined" and error.startswith("quality check failed (rows removed from raw)")
    assert raw_count(loader, "admin_patient", feed.id) == 0 and raw_count(loader, "admin_userinrole", feed.id) == 0
    # released, it loads (and is checked) again: the delivery itself was fine
    from im1.ingest import status

    with __import__("psycopg").connect(site.loader_url) as conn:
        status.release(conn, bid, "the loader bug is fixed")
    [again] = run_core(site, feed)
    assert again.status == "loaded"
    assert [r.success for r in quality.check_batches([bid], site.loader_url)] == [True]
    assert raw_count(loader, "admin_patient", feed.id) == sum(1 for p in world.patients if p.reg_date <= START)


def test_values_stored_by_an_older_version_are_scrubbed_before_the_data_docs_are_rebuilt(tmp_path):
    """Validation results written when GX kept up to five unexpected values per check lose them (and
    the Data Docs rendered from them go) the first time this version opens the GX project."""
    import json

    stored = tmp_path / "gx" / "uncommitted" / "validations" / "emis.admin_patient" / "run" / "result.json"
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({"results": [{"result": {
        "unexpected_count": 1, "partial_unexpected_list": ["31/02/1887"],
        "partial_unexpected_counts": [{"value": "31/02/1887", "count": 1}]}}]}))
    docs = tmp_path / "gx" / "uncommitted" / "data_docs" / "local_site" / "validations" / "page.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<td>31/02/1887</td>")
    assert quality._scrub_stored_results(tmp_path) is True
    assert json.loads(stored.read_text()) == {"results": [{"result": {"unexpected_count": 1}}]}
    assert not docs.exists()
    assert quality._scrub_stored_results(tmp_path) is False  # once
