"""The activity models (appointments, prescribing) built by dbt on real PostgreSQL.

A small synthetic EMIS practice is written into the raw tables the way the loader writes them (a
ledger batch per day, loaded and quality-checked, rows COPYed with their metadata columns), and a
SystmOne practice goes through the TPP ingest functions from a gateway folder; then ``dbt build``
runs the activity models and their tests (unit tests included):

* after the bulk, the EMIS practice's marts equal the synthetic supplier's ground truth, and so
  do the TPP practice's after its bulk and a delta;
* a later batch changes what the incremental models must notice without the row they keep
  changing (a session handed to another clinician, a nurse re-graded as a GP, a drug code
  renamed) and deletes and un-books records; the incremental run shows every change, and equals
  a full refresh of the same models, row for row.

The DAG path (SFTP, gpg, Airflow) is covered by tests/e2e/test_emis_slice.py.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap

import psycopg

from im1 import specs
from im1.warehouse import LOADER, MART_READER
from im1dev import reconcile, runtime
from im1dev.synth import casebook, emis, truth
from im1dev.synth.world import World, build_world

FEED = "it_activity"
ODS = "Z99301"
TPP_FEED = "it_activity_tpp"
TPP_ODS = "Z91377"
SELECT = ["--select", "+pub_appointments", "+pub_prescribing", "+mart_prescribing_bnf", "prescribing_unmapped_drugs",
          "+int_medication_authorisations", "+mart_qof_registers",
          "+mart_qof_indicators", "+int_organisations"]


def _dbt(command: str = "build", *args: str) -> str:
    """dbt over the activity models and their parents (``build`` also runs their data and unit tests)."""
    from im1 import paths

    target = paths.state_dir() / "dbt-activity"  # this session's own (never the project's target folder)
    res = runtime.run(runtime.dbt_cmd(command, "--quiet", *SELECT, *args, "--target-path", str(target / "target"),
                                      "--log-path", str(target / "logs")), dict(os.environ), check=False, quiet=True)
    assert res.returncode == 0, f"dbt {command} {' '.join(args)} failed:\n{res.stdout[-6000:]}"
    return res.stdout


def _load(conn: psycopg.Connection, tables: dict[str, list[tuple]], extract_ts: dt.datetime, key: str) -> int:
    """One ledger batch for the practice, rows COPYed into raw as the loader does (metadata included)."""
    bid = conn.execute(
        "insert into ingest.batches (feed_id, supplier, batch_key, organisation, extract_ts, status, quality_status, "
        "loaded_at, rows_loaded, schema_version) values (%s, 'emis', %s, %s, %s, 'loaded', 'passed', now(), %s, '8.2') "
        "returning batch_id", (FEED, key, ODS, extract_ts, sum(len(r) for r in tables.values()))).fetchone()[0]
    for table, rows in tables.items():
        if not rows:
            continue
        cols = emis.COLS[table]
        project = cols.projector("8.2")
        raw = [specs.raw_column_name(c) for c in cols.header("8.2")]
        seq = conn.execute("select nextval('ingest.load_seq')").fetchone()[0]
        names = ", ".join([*raw, "_feed_id", "_organisation", "_batch_id", "_file_id", "_row_number", "_load_seq"])
        with conn.cursor().copy(f"copy raw_emis.{specs.emis_table(table).raw_name} ({names}) from stdin") as cp:
            for i, row in enumerate(rows, 1):
                cp.write_row([*project(row, 1_000_000 + i), FEED, ODS, bid, 0, i, seq])
    conn.commit()
    return bid


def _load_tpp(tmp_path, monkeypatch, loader_url: str, world: World, day: int) -> None:
    """A SystmOne batch folder through the TPP ingest functions (discover, fetch, load, quality)."""
    from im1.config import load_config
    from im1.ingest.pipeline import Pipeline
    from im1.transport.folder import FolderClient
    from im1dev.synth import supplier

    gateway = tmp_path / "tpp_gateway"
    gateway.mkdir(exist_ok=True)
    feeds = tmp_path / "feeds_tpp.yaml"
    feeds.write_text(textwrap.dedent(f"""
        version: 1
        feeds:
          - id: {TPP_FEED}
            supplier: tpp
            transport: {{kind: folder, path: {gateway}}}
            organisations: [{{ods_code: {TPP_ODS}}}]
    """))
    monkeypatch.setenv("IM1_FEEDS_FILE", str(feeds))
    feed = load_config(feeds).feed(TPP_FEED)
    supplier.publish_tpp_day(world, day, gateway)
    with FolderClient() as client:
        results = Pipeline(feed, loader_url).run_once(client, quality=True)
    assert [r.status for r in results] == ["loaded"], results


INT_APPOINTMENTS = ("select supplier, practice_code, appointment_id, patient_id, session_id, practitioner_id, "
                    "appointment_date, booked_date, lead_time_band, status_harmonised, gpad_status, gpad_mode, "
                    "hcp_type, is_gpad_counted from intermediate.int_appointments where practice_code = any(%s)")
INT_ISSUES = ("select supplier, practice_code, issue_id, patient_id, authorisation_id, issue_date, source_code, "
              "dmd_code, drug_name from intermediate.int_medication_issues where practice_code = any(%s)")
INT_AUTHORISATIONS = ("select supplier, practice_code, authorisation_id, patient_id, start_date, source_code, dmd_code, "
                      "drug_name, authorisation_type, is_active, end_date, quantity, number_of_issues "
                      "from intermediate.int_medication_authorisations where practice_code = any(%s)")


def _state(db) -> dict[str, set[tuple]]:
    practices = ([ODS, TPP_ODS],)
    return {
        "int_appointments": set(db.execute(INT_APPOINTMENTS, practices).fetchall()),
        "int_medication_issues": set(db.execute(INT_ISSUES, practices).fetchall()),
        "int_medication_authorisations": set(db.execute(INT_AUTHORISATIONS, practices).fetchall()),
        **{rel: set(db.execute(f"select * from {rel} where practice_code = any(%s)", practices).fetchall())  # noqa: S608
           for rel in ("marts.mart_appointments", "marts.mart_prescribing", "marts.mart_prescribing_bnf",
                       "published.pub_appointments", "published.pub_prescribing")},
    }


def _col(table: str, row: tuple, name: str) -> str:
    return row[emis.COLS[table].index[name]]


def _with(table: str, row: tuple, **values: str) -> tuple:
    out = list(row)
    for name, value in values.items():
        out[emis.COLS[table].index[name]] = value
    return tuple(out)


def test_activity_marts_match_truth_and_incremental_equals_full_refresh(warehouse, db, tmp_path, monkeypatch):
    world = build_world(seed=77, patients_per_practice=80, ods_codes=[ODS], start=dt.date(2026, 11, 1), days=2,
                        years=1)
    tpp_world = build_world(seed=78, patients_per_practice=80, ods_codes=[TPP_ODS], start=dt.date(2026, 11, 1),
                            days=2, years=1, supplier="tpp", community_share=0.2)
    bulk = emis.snapshot(world, world.start)
    with psycopg.connect(warehouse.role_url(LOADER)) as loader:
        _load(loader, bulk, World.extract_ts(world.start), "bulk")
    _load_tpp(tmp_path, monkeypatch, warehouse.role_url(LOADER), tpp_world, 0)
    _dbt()

    # 1. the bulk: the marts equal the ground truth (read as mart_reader, the role that may)
    with psycopg.connect(warehouse.role_url(MART_READER)) as reader:
        diffs = reconcile.compare_activity(reader, truth.compute(world, world.start), practices=[ODS])
    assert all(d.ok for d in diffs.values()), {k: d.summary() for k, d in diffs.items()}
    assert all(d.rows > 10 for d in diffs.values())
    # the truth matched with private prescriptions in the EMIS extract (they are not items)
    assert any(_col("Prescribing_IssueRecord", r, "IsPrivatelyPrescribed") == "true"
               for r in bulk["Prescribing_IssueRecord"])
    # the QOF casebook cases planted in both practices: every expected answer, EMIS and SystmOne
    # (including a SystmOne patient with two overlapping GMS registrations, counted once)
    check = casebook.check_warehouse(db, [world, tpp_world])
    assert check.ok, "\n".join(check.mismatches)
    assert check.checked["emis"] > 100 and check.checked["tpp"] > 100
    overlap = next(p for p in tpp_world.patients if p.case == "pop-overlapping-gms")
    assert db.execute("select count(*) from intermediate.int_qof_population where practice_code = %s "
                      "and patient_id = %s and reference_date = '2026-03-31'", (TPP_ODS, str(overlap.key))).fetchone()[0] == 1

    # 2. changes the incremental models must notice although the rows they keep do not change
    slot, su, uir, drug, issue, record = ("Appointment_Slot", "Appointment_SessionUser", "Admin_UserInRole",
                                          "Coding_DrugCode", "Prescribing_IssueRecord", "Prescribing_DrugRecord")
    gp_codes = {"R0260"}
    staff = {_col(uir, r, "UserInRoleGuid"): r for r in bulk[uir]}
    gps = [g for g, r in staff.items() if _col(uir, r, "JobCategoryCode") in gp_codes]
    others = [g for g, r in staff.items() if _col(uir, r, "JobCategoryCode") not in gp_codes]
    booked = [r for r in bulk[slot] if _col(slot, r, "PatientGuid") and _col(slot, r, "SlotStatus") == "Left"]
    holder = {_col(su, r, "SessionGuid"): _col(su, r, "UserInRoleGuid") for r in bulk[su]}
    # (a) a session with attended appointments handed from its GP to another member of staff
    moved = next(r for r in booked if holder.get(_col(slot, r, "SessionGuid")) in gps)
    session = _col(slot, moved, "SessionGuid")
    old_holder, new_holder = holder[session], others[0]
    # (b) a member of staff who holds sessions re-graded as a GP
    regraded = next(g for g in others[1:] if g in holder.values())
    # (c) a drug code renamed (new dm+d code and name)
    issued_code = _col(issue, bulk[issue][0], "CodeId")
    renamed = next(r for r in bulk[drug] if _col(drug, r, "CodeId") == issued_code)
    # (d) a booked slot deleted, another one un-booked, an issue and a drug record deleted
    deleted_slot, unbooked_slot = booked[-1], booked[-2]
    deleted_issue = bulk[issue][-1]
    deleted_record = bulk[record][-1]
    edits = {
        su: [emis.delete_row(su, (session, old_holder, "false")), (session, new_holder, "false")],
        uir: [_with(uir, staff[regraded], JobCategoryCode="R0260", JobCategoryName="General Medical Practitioner")],
        drug: [_with(drug, renamed, Term="Renamed drug 10mg tablets", DmdProductCodeId="99999999999")],
        slot: [emis.delete_row(slot, deleted_slot),
               _with(slot, unbooked_slot, PatientGuid="", SlotStatus="Slot Available", BookedDate="", BookedTime="",
                     SendInTime="", LeftTime="", DidNotAttend="")],
        issue: [emis.delete_row(issue, deleted_issue)],
        record: [emis.delete_row(record, deleted_record)],
    }
    next_day = world.start + dt.timedelta(days=1)
    with psycopg.connect(warehouse.role_url(LOADER)) as loader:
        _load(loader, emis.delta(world, next_day), World.extract_ts(next_day), "delta")
        _load(loader, edits, World.extract_ts(next_day) + dt.timedelta(hours=1), "edits")
    _load_tpp(tmp_path, monkeypatch, warehouse.role_url(LOADER), tpp_world, 1)
    _dbt()
    incremental = _state(db)

    # the SystmOne practice after its bulk and a delta (shared-care rows are another organisation's)
    with psycopg.connect(warehouse.role_url(MART_READER)) as reader:
        diffs = reconcile.compare_activity(reader, truth.compute(tpp_world, next_day), practices=[TPP_ODS])
    assert all(d.ok for d in diffs.values()), {k: d.summary() for k, d in diffs.items()}
    assert all(d.rows > 10 for d in diffs.values())

    appts = {r[2]: r for r in incremental["int_appointments"] if r[1] == ODS}
    in_session = [r for r in appts.values() if r[4] == session]
    assert in_session and all((r[5], r[12]) == (new_holder, "Other Practice staff") for r in in_session)
    assert all(r[12] == "GP" for r in appts.values() if r[5] == regraded)
    assert any(r[5] == regraded for r in appts.values())
    assert _col(slot, deleted_slot, "SlotGuid") not in appts
    assert _col(slot, unbooked_slot, "SlotGuid") not in appts
    issues = {r[2]: r for r in incremental["int_medication_issues"] if r[1] == ODS}
    assert _col(issue, deleted_issue, "IssueRecordGuid") not in issues
    renamed_issues = [r for r in issues.values() if r[6] == issued_code]
    assert renamed_issues and all(r[7:] == ("99999999999", "Renamed drug 10mg tablets") for r in renamed_issues)
    auths = {r[2]: r for r in incremental["int_medication_authorisations"] if r[1] == ODS}
    assert _col(record, deleted_record, "DrugRecordGuid") not in auths
    renamed_auths = [r for r in auths.values() if r[5] == issued_code]
    assert renamed_auths and all(r[6:8] == ("99999999999", "Renamed drug 10mg tablets") for r in renamed_auths)

    # 3. the incremental result is exactly what a full refresh of the same models gives
    _dbt("run", "--full-refresh")
    full = _state(db)
    for name in incremental:
        assert incremental[name] == full[name], (name, len(incremental[name] ^ full[name]))

    # 4. a re-run with nothing new changes nothing
    _dbt("run")
    assert _state(db) == full
