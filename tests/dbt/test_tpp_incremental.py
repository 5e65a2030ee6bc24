"""The incremental mechanism on SystmOne data: raw TPP batches written straight into raw_tpp (as the
loader leaves them, ledger and file rows included), then dbt again after each delivery.

base_tpp__srcode -> stg_tpp__srcode -> int_observations, through a bulk, a delta, a batch that is
not ready yet (quality checks pending), a late (older) batch, the pending batch passing, a re-bulk
of SRCode and an older delta loaded after it. After every incremental run the three models hold
exactly the expected entries and equal a --full-refresh of them (every column but applied_at);
a run with nothing new changes nothing. The delta also changes what int_observations looks up
without its SRCode row changing: an SRMapping label, a GMS registration elsewhere (a shared-care
row that stops being one) and a patient record arriving (person_key).
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg import sql

from im1 import specs
from tests.dbt.conftest import run_dbt

ODS = "Z99902"
ELSEWHERE = "Z55555"
FEED = "tpp_t_incremental"
DM, SYS, WEIGHT = "111552007", "271649006", "27113001"
MODELS = ("base_tpp__srcode", "stg_tpp__srcode", "int_observations")
SELECT = ("--select", "+int_observations")


class TppRaw:
    """Write raw_tpp rows, their ledger batch and file rows as the loader leaves them."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.row = 0

    def batch(self, folder: str, extract_ts: dt.datetime, *, full: tuple[str, ...] = (), ready: bool = True) -> int:
        bid = self.conn.execute(
            "insert into ingest.batches (feed_id, supplier, batch_key, organisation, extract_ts, status, "
            "quality_status, loaded_at) values (%s, 'tpp', %s, %s, %s, 'loaded', %s, now()) returning batch_id",
            (FEED, folder, ODS, extract_ts, "passed" if ready else "pending")).fetchone()[0]
        for f in ("SRCode", "SRPatient", "SRPatientRegistration", "SRMapping"):
            self.conn.execute(
                "insert into ingest.files (batch_id, file_name, table_name, status, is_delta) "
                "values (%s, %s, %s, 'loaded', %s)", (bid, f"{f}.csv", f, f not in full))
        return bid

    def passed(self, batch_id: int) -> None:
        self.conn.execute("update ingest.batches set quality_status = 'passed' where batch_id = %s", (batch_id,))

    def insert(self, file: str, batch_id: int, **values: str) -> None:
        cols_ok = {specs.raw_column_name(c) for c in specs.tpp_files()[file].columns}
        assert set(values) <= cols_ok, set(values) - cols_ok
        self.row += 1
        cols = {**values, "_feed_id": FEED, "_organisation": ODS, "_batch_id": batch_id, "_file_id": 0,
                "_row_number": self.row, "_load_seq": self.row}
        self.conn.execute(sql.SQL("insert into {} ({}) values ({})").format(
            sql.Identifier("raw_tpp", specs.raw_table_name(file)), sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(sql.Placeholder() * len(cols))), list(cols.values()))

    def code(self, batch_id: int, row: int, patient: int, concept: str, *, value: str = "", episode: str = "",
             at: str = ODS) -> None:
        self.insert("SRCode", batch_id, rowidentifier=str(row), idorganisationvisibleto=ODS, idpatient=str(patient),
                    dateevent="01 Jan 2025 09:00:00", dateeventrecorded="01 Jan 2025 09:05:00", snomedcode=concept,
                    snomedtext=f"term {concept}", numericvalue=value, numericunit="mmHg" if value else "",
                    episodetype=episode, idorganisation=at, idorganisationregisteredat=at, removeddata="0")

    def removed(self, batch_id: int, row: int) -> None:
        self.insert("SRCode", batch_id, rowidentifier=str(row), idorganisationvisibleto=ODS, removeddata="1")

    def patient(self, batch_id: int, row: int, nhs: str) -> None:
        self.insert("SRPatient", batch_id, rowidentifier=str(row), idorganisationvisibleto=ODS, nhsnumber=nhs,
                    gender="F", datebirth="01 Jan 1960", removeddata="0")

    def registration(self, batch_id: int, row: int, patient: int, at: str) -> None:
        self.insert("SRPatientRegistration", batch_id, rowidentifier=str(row), idorganisationvisibleto=ODS,
                    idpatient=str(patient), idorganisation=at, idorganisationregisteredat=at,
                    registrationstatus="GMS", removeddata="0")

    def mapping(self, batch_id: int, row: int, label: str) -> None:
        self.insert("SRMapping", batch_id, rowidentifier=str(row), idmappinggroup="2", mapping=label)


def entries(conn) -> dict[str, tuple]:
    """int_observations: observation_id -> (patient, concept, value, episode, has a person_key)."""
    rows = conn.execute("select observation_id, patient_id, snomed_concept_id::text, value::text, episode, "
                        "person_key is not null from intermediate.int_observations where supplier = 'tpp'")
    return {r[0]: r[1:] for r in rows}


def tombstones(conn) -> set[int]:
    return {r[0] for r in conn.execute("select row_identifier from staging.base_tpp__srcode where is_deleted")}


def state(conn) -> dict[str, list[tuple]]:
    """Every row of the three models, every column but applied_at, as text."""
    out = {}
    for name in MODELS:
        schema = "intermediate" if name.startswith("int_") else "staging"
        cols = [c for (c,) in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
            "and column_name <> 'applied_at' order by ordinal_position", (schema, name))]
        q = sql.SQL("select {} from {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols),
            sql.Identifier(schema, name))
        out[name] = sorted(conn.execute(q).fetchall(), key=repr)
    return out


def fingerprint(conn) -> dict[str, list[tuple]]:
    """Every row of the two tables, applied_at included, and the bookkeeping."""
    return {
        "base": sorted(conn.execute("select b::text from staging.base_tpp__srcode as b").fetchall()),
        "int": sorted(conn.execute("select o::text from intermediate.int_observations as o").fetchall()),
        "applied": sorted(conn.execute("select model, batch_id from staging.im1_applied_batches").fetchall()),
    }


@pytest.fixture(scope="module")
def admin(scratch):
    with psycopg.connect(scratch.admin_url, autocommit=True) as c:
        yield c


def test_tpp_incremental_equals_full_refresh(scratch, admin, tmp_path):
    raw, target = TppRaw(admin), tmp_path / "target"

    def incremental_run_equals_full_refresh(applies: set[int]) -> None:
        """An incremental run re-stamps exactly the base rows ``applies`` names (no others: it did not
        rebuild), and its three models equal a full refresh of them."""
        results = run_dbt(scratch, target, "run", *SELECT)
        compiled = next(r["compiled_code"] for r in results if r["unique_id"] == "model.im1.int_observations")
        assert "im1_touched__int_observations" in compiled
        assert {r for (r,) in admin.execute(
            "select row_identifier from staging.base_tpp__srcode "
            "where applied_at = (select max(applied_at) from staging.base_tpp__srcode)")} == applies
        incremental = state(admin)
        run_dbt(scratch, target, "run", *SELECT, "--full-refresh")
        full = state(admin)
        for name in MODELS:
            assert incremental[name] == full[name], (name, set(incremental[name]) ^ set(full[name]))

    # -- the bulk: every file in full -----------------------------------------------------------
    b1 = raw.batch("20261102_0315", dt.datetime(2026, 11, 2), full=("SRCode", "SRPatient", "SRPatientRegistration",
                                                                     "SRMapping"))
    raw.patient(b1, 1, "9990000018")
    raw.patient(b1, 2, "9990000026")
    raw.registration(b1, 1, 1, ODS)
    raw.registration(b1, 2, 2, ODS)
    raw.mapping(b1, 2003, "Review")
    raw.code(b1, 1, 1, DM)
    raw.code(b1, 2, 1, SYS, value="140")
    raw.code(b1, 3, 1, WEIGHT)  # outside every code list: not kept
    raw.code(b1, 4, 2, DM, at=ELSEWHERE)  # recorded elsewhere, no GMS registration there: shared care
    raw.code(b1, 5, 1, DM, episode="2003")
    raw.code(b1, 6, 3, DM)  # its patient arrives later: kept without a person_key
    raw.code(b1, 7, 2, SYS, value="120")
    run_dbt(scratch, target, "build", *SELECT, "--exclude", "resource_type:unit_test", "resource_type:test")
    assert entries(admin) == {
        "1": ("1", DM, None, None, True),
        "2": ("1", SYS, "140", None, True),
        "5": ("1", DM, None, "Review", True),
        "6": ("3", DM, None, None, False),
        "7": ("2", SYS, "120", None, True),
    }

    # -- a delta, and a batch loaded after it whose checks have not passed yet ---------------------
    b2 = raw.batch("20261103_0315", dt.datetime(2026, 11, 3))
    raw.removed(b2, 1)
    raw.code(b2, 2, 1, SYS, value="150")
    raw.code(b2, 8, 2, SYS, value="130")
    raw.registration(b2, 3, 2, ELSEWHERE)  # patient 2 is (also) GMS-registered where row 4 was recorded
    raw.patient(b2, 3, "9990000034")
    raw.mapping(b2, 2003, "Review (changed)")
    b3 = raw.batch("20261104_0315", dt.datetime(2026, 11, 4), ready=False)
    raw.code(b3, 2, 1, SYS, value="999")
    incremental_run_equals_full_refresh({1, 2, 8})
    assert entries(admin) == {
        "2": ("1", SYS, "150", None, True),  # not 999: batch 3 is not ready
        "4": ("2", DM, None, None, True),  # no longer shared care
        "5": ("1", DM, None, "Review (changed)", True),
        "6": ("3", DM, None, None, True),
        "7": ("2", SYS, "120", None, True),
        "8": ("2", SYS, "130", None, True),
    }
    assert tombstones(admin) == {1}

    # -- an older batch loaded late; then batch 3 passes its checks --------------------------------
    b4 = raw.batch("20261102_1515", dt.datetime(2026, 11, 2, 12))
    raw.code(b4, 1, 1, DM)  # older than its removal: stays removed
    raw.code(b4, 2, 1, SYS, value="145")  # older than batch 2's value: ignored
    raw.code(b4, 9, 1, SYS, value="110")  # new: applied
    incremental_run_equals_full_refresh({9})
    assert entries(admin)["2"][2] == "150" and "1" not in entries(admin) and entries(admin)["9"][2] == "110"
    raw.passed(b3)
    incremental_run_equals_full_refresh({2})
    assert entries(admin)["2"][2] == "999"

    # -- a re-bulk of SRCode without row 7, then an older delta loaded after it ---------------------
    b5 = raw.batch("20261105_0315", dt.datetime(2026, 11, 5), full=("SRCode",))
    raw.code(b5, 2, 1, SYS, value="999")
    raw.code(b5, 4, 2, DM, at=ELSEWHERE)
    raw.code(b5, 5, 1, DM, episode="2003")
    raw.code(b5, 6, 3, DM)
    raw.code(b5, 8, 2, SYS, value="130")
    raw.code(b5, 9, 1, SYS, value="110")
    b6 = raw.batch("20261104_1515", dt.datetime(2026, 11, 4, 12))
    raw.code(b6, 7, 2, SYS, value="125")  # before the re-bulk: cannot bring row 7 back
    raw.code(b6, 10, 2, SYS, value="126")  # the same for a record the re-bulk does not know
    incremental_run_equals_full_refresh({2, 3, 4, 5, 6, 7, 8, 9, 10})  # 3 and 7 superseded
    expected = {
        "2": ("1", SYS, "999", None, True),
        "4": ("2", DM, None, None, True),
        "5": ("1", DM, None, "Review (changed)", True),
        "6": ("3", DM, None, None, True),
        "8": ("2", SYS, "130", None, True),
        "9": ("1", SYS, "110", None, True),
    }
    assert entries(admin) == expected
    assert tombstones(admin) == {1, 3, 7, 10}
    assert {b for (b,) in admin.execute("select batch_id from staging.im1_applied_batches "
                                        "where model = 'base_tpp__srcode'")} == {b1, b2, b3, b4, b5, b6}

    # -- a run with nothing new changes nothing; then with the data tests ---------------------------
    before = fingerprint(admin)
    run_dbt(scratch, target, "build", "--select", *MODELS, "--exclude", "resource_type:unit_test")
    assert fingerprint(admin) == before
    assert entries(admin) == expected
