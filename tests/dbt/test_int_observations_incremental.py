"""int_observations on a scratch warehouse: raw EMIS batches written straight into raw_emis (as the
loader leaves them, ledger rows included), then dbt twice, the second time incremental.

The bulk brings kept and dropped entries, a CodeId that Coding_ClinicalCode repeats under a second
parent, a CodeId whose code has not arrived yet and an entry whose patient has not arrived. The
delta deletes a kept entry (tombstone), re-codes one to a concept outside the code lists, adds one,
and brings the missing code and patient; a later batch is ignored until its quality checks pass. After each run the table must hold exactly the expected
rows, and after the incremental run it must equal a full rebuild. A changed code-list fingerprint
makes the next run re-read everything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import psycopg
import pytest
from psycopg import sql

from im1 import specs
from im1dev import runtime
from tests.dbt.conftest import run_dbt

ODS = "Z99901"
ORG = "{00000000-0000-4000-8000-000000099901}"
FEED = "emis_t_incremental"
P1, P2, P3 = (f"{{00000000-0000-4000-8000-0000000000P{i}}}" for i in (1, 2, 3))

DM, SYS, WEIGHT, SENSITIVE, HYP, ASTHMA_COPD = (111552007, 271649006, 27113001, 1067031000000109, 10725009,
                                                 195949008)
CODE = {DM: 1001, SYS: 1002, WEIGHT: 1003, SENSITIVE: 1004, HYP: 1005, ASTHMA_COPD: 1006}
MODELS = "+int_observations"


def o(n: int) -> str:
    return f"{{00000000-0000-4000-8000-{n:012d}}}"


class Raw:
    """Write raw_emis rows and their ledger batch as the loader would leave them."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.row = 0

    def batch(self, key: str, extract_ts: dt.datetime, quality: str = "passed") -> int:
        return self.conn.execute(
            "insert into ingest.batches (feed_id, supplier, batch_key, organisation, extract_ts, status, "
            "quality_status, loaded_at, file_count) values (%s, 'emis', %s, %s, %s, 'loaded', %s, now(), 21) "
            "returning batch_id", (FEED, key, ODS, extract_ts, quality)).fetchone()[0]

    def insert(self, table: str, batch_id: int, **values: str) -> None:
        raw = specs.emis_table(table).raw_name
        names = {specs.raw_column_name(c) for c in specs.emis_table(table).all_column_names()}
        assert set(values) <= names, set(values) - names
        self.row += 1
        cols = {**values, "_feed_id": FEED, "_organisation": ODS, "_batch_id": batch_id, "_file_id": 0,
                "_row_number": self.row, "_load_seq": self.row, "processingid": str(self.row)}
        self.conn.execute(sql.SQL("insert into {} ({}) values ({})").format(
            sql.Identifier("raw_emis", raw), sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(sql.Placeholder() * len(cols))), list(cols.values()))

    def code(self, batch_id: int, concept: int, code_id: int | None = None, parent: str = "") -> None:
        self.insert("Coding_ClinicalCode", batch_id, codeid=str(code_id or CODE[concept]), term=f"term {concept}",
                    snomedctconceptid=str(concept), parentcodeid=parent)

    def patient(self, batch_id: int, guid: str, nhs: str) -> None:
        self.insert("Admin_Patient", batch_id, patientguid=guid, organisationguid=ORG, sex="F",
                    dateofbirth="1960-01-01", dateofregistration="2000-01-01", nhsnumber=nhs,
                    patienttypedescription="Regular", dummytype="false", deleted="false")

    def obs(self, batch_id: int, guid: str, patient: str, code_id: int | None, value: str = "",
            deleted: bool = False) -> None:
        if deleted:  # EMIS sends a removed record as its key GUIDs and Deleted = true
            self.insert("CareRecord_Observation", batch_id, observationguid=guid, patientguid=patient,
                        organisationguid=ORG, deleted="true")
            return
        self.insert("CareRecord_Observation", batch_id, observationguid=guid, patientguid=patient,
                    organisationguid=ORG, effectivedate="2025-01-01", entereddate="2025-01-01",
                    codeid=str(code_id), value=value, numericunit="mmHg" if value else "", deleted="false",
                    isconfidential="false")


def observations(conn) -> dict[str, tuple]:
    rows = conn.execute("select observation_id, patient_id, snomed_concept_id, source_code, value, "
                        "person_key is not null from intermediate.int_observations").fetchall()
    return {r[0]: r[1:] for r in rows}


@pytest.fixture(scope="module")
def admin(scratch):
    with psycopg.connect(scratch.admin_url, autocommit=True) as c:
        yield c


def test_incremental_observations(scratch, admin, tmp_path):
    raw = Raw(admin)
    target = tmp_path / "target"
    # -- the bulk -----------------------------------------------------------------------------
    b1 = raw.batch("bulk_000001@20261102020000", dt.datetime(2026, 11, 2, 2))
    for concept in (DM, SYS, WEIGHT, SENSITIVE, HYP):
        raw.code(b1, concept)
    raw.code(b1, SYS, parent=str(CODE[DM]))  # the same CodeId under a second parent
    raw.patient(b1, P1, "9990000018")
    raw.patient(b1, P2, "999 000 0026")
    raw.obs(b1, o(1), P1, CODE[DM])
    raw.obs(b1, o(2), P1, CODE[SYS], "138")
    raw.obs(b1, o(3), P1, CODE[WEIGHT], "70")  # outside every code list: not kept
    raw.obs(b1, o(4), P1, CODE[SENSITIVE])  # sensitive condition: excluded
    raw.obs(b1, o(5), P2, CODE[ASTHMA_COPD])  # its code arrives tomorrow: kept, unresolved
    raw.obs(b1, o(6), P2, CODE[HYP])
    raw.obs(b1, o(7), P3, CODE[DM])  # its patient arrives tomorrow: kept without a person_key
    run_dbt(scratch, target, "build", "--select", MODELS, "--exclude", "resource_type:unit_test", "resource_type:test")
    assert observations(admin) == {
        o(1): (P1, DM, str(CODE[DM]), None, True),
        o(2): (P1, SYS, str(CODE[SYS]), 138, True),
        o(5): (P2, None, str(CODE[ASTHMA_COPD]), None, True),
        o(6): (P2, HYP, str(CODE[HYP]), None, True),
        o(7): (P3, DM, str(CODE[DM]), None, False),
    }
    key = admin.execute("select person_key from intermediate.int_observations where observation_id = %s",
                        (o(1),)).fetchone()[0]
    assert key == hmac.new(bytes.fromhex(runtime.pseudonym_key()) if _is_hex(runtime.pseudonym_key())
                           else runtime.pseudonym_key().encode(), b"9990000018", hashlib.sha256).hexdigest()
    first_mark = _watermark(admin)

    # -- a delta --------------------------------------------------------------------------------
    b2 = raw.batch("delta_000002@20261103020000", dt.datetime(2026, 11, 3, 2))
    raw.code(b2, ASTHMA_COPD)
    raw.patient(b2, P3, "9990000034")
    raw.obs(b2, o(1), P1, None, deleted=True)
    raw.obs(b2, o(6), P2, CODE[WEIGHT])  # re-coded outside the lists: leaves
    raw.obs(b2, o(8), P2, CODE[SYS], "120")
    results = run_dbt(scratch, target, "build", "--select", MODELS, "--exclude", "resource_type:unit_test", "resource_type:test")
    compiled = next(r["compiled_code"] for r in results if r["unique_id"] == "model.im1.int_observations")
    assert "b.applied_at > cast('" in compiled  # read only the rows applied since the last run
    expected = {
        o(2): (P1, SYS, str(CODE[SYS]), 138, True),
        o(5): (P2, ASTHMA_COPD, str(CODE[ASTHMA_COPD]), None, True),
        o(7): (P3, DM, str(CODE[DM]), None, True),
        o(8): (P2, SYS, str(CODE[SYS]), 120, True),
    }
    assert observations(admin) == expected
    assert _watermark(admin) > first_mark

    # -- a run with nothing new changes nothing; a batch whose checks have not passed is not read
    # until they pass
    run_dbt(scratch, target, "run", "--select", "int_observations")
    assert observations(admin) == expected
    b3 = raw.batch("delta_000003@20261104020000", dt.datetime(2026, 11, 4, 2), quality="pending")
    raw.obs(b3, o(8), P2, CODE[SYS], "125")
    run_dbt(scratch, target, "run", "--select", "+int_observations", "--exclude", "resource_type:seed")
    assert observations(admin) == expected
    admin.execute("update ingest.batches set quality_status = 'passed' where batch_id = %s", (b3,))
    run_dbt(scratch, target, "run", "--select", "+int_observations", "--exclude", "resource_type:seed")
    expected[o(8)] = (P2, SYS, str(CODE[SYS]), 125, True)
    assert observations(admin) == expected

    # -- a new code-list fingerprint re-reads everything
    admin.execute("update staging.im1_watermarks set fingerprint = 'an older code list' "
                  "where model = 'int_observations'")
    results = run_dbt(scratch, target, "run", "--select", "int_observations")
    compiled = next(r["compiled_code"] for r in results if r["unique_id"] == "model.im1.int_observations")
    assert "b.applied_at > cast('" not in compiled
    assert observations(admin) == expected

    # -- equal to a full rebuild
    run_dbt(scratch, target, "run", "--select", "int_observations", "--full-refresh")
    assert observations(admin) == expected


def _is_hex(key: str) -> bool:
    return len(key) >= 32 and len(key) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in key)


def _watermark(conn) -> dt.datetime:
    return conn.execute("select applied_at from staging.im1_watermarks where model = 'int_observations' "
                        "and source = 'base_emis__carerecord_observation'").fetchone()[0]
