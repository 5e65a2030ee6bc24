"""The synthetic supplier's population and EMIS files look like the real thing."""

from __future__ import annotations

import csv
import datetime as dt
import re

from im1 import specs
from im1.synth import emis as synth_emis
from im1.synth import truth
from im1.synth.world import build_world, valid_nhs_number

GUID = re.compile(r"^\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}$")


def test_world_is_deterministic_and_uses_test_nhs_numbers():
    a = build_world(seed=7, patients_per_practice=50)
    b = build_world(seed=7, patients_per_practice=50)
    assert [p.nhs_number for p in a.patients] == [p.nhs_number for p in b.patients]
    assert all(valid_nhs_number(p.nhs_number) and p.nhs_number.startswith("999") for p in a.patients)
    assert len({p.nhs_number for p in a.patients}) == len(a.patients)
    assert build_world(seed=8, patients_per_practice=50).patients[0].nhs_number != a.patients[0].nhs_number


def test_emis_files_are_quoted_crlf_utf8_with_spec_headers(tmp_path):
    w = build_world(seed=3, patients_per_practice=40)
    files = synth_emis.write_batch(w, synth_emis.snapshot(w, w.start), tmp_path,
                                   extract_ts=dt.datetime(2026, 11, 2, 2), batch_number=1,
                                   export_type="bulk", keyring=None, recipient=None)
    assert len(files) == 21
    patient = next(f for f in files if "_Admin_Patient_" in f.name)
    raw = patient.read_bytes()
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(line.startswith(b'"') and line.endswith(b'"') for line in lines[:-1])
    rows = list(csv.reader(raw.decode("utf-8").splitlines(), strict=True))
    assert rows[0] == specs.emis_table("Admin_Patient").column_names("8.2")
    body = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert all(GUID.match(r["PatientGuid"]) and GUID.match(r["OrganisationGuid"]) for r in body)
    assert {r["Deleted"] for r in body} == {"false"}
    assert any(not r["GivenName"].isascii() or not r["Surname"].isascii() for r in body)
    empty = next(f for f in files if "_CareRecord_Diary_" in f.name)
    assert empty.read_bytes().count(b"\r\n") == 1  # header-only file for an empty table


def test_list_size_truth_counts_by_hand():
    w = build_world(seed=1, patients_per_practice=0)
    from im1.synth.world import Patient

    d = dt.date(2025, 4, 1)
    base = dict(person_guid="{P}", org_guid="{O}", ods_code="Z90001", nhs_number="9990000018", title="",
                given="", middle="", surname="", postcode="", house="", street="", town="", patient_number=1,
                usual_gp_guid=None)

    def p(key, sex, dob, reg, typ="Regular", dereg=None, death=None, dummy=False):
        return Patient(key=key, patient_guid=f"{{{key}}}", sex=sex, dob=dob, reg_date=reg, reg_type=typ,
                       dereg_date=dereg, death_date=death, dummy=dummy, **base)

    # the worked example in marts.md section 4.4
    w.patients = [
        p(1, "F", dt.date(1990, 5, 1), dt.date(2010, 1, 1)),
        p(2, "M", dt.date(2025, 2, 1), dt.date(2025, 3, 1)),
        p(3, "F", dt.date(1950, 1, 1), dt.date(2000, 1, 1), death=dt.date(2025, 3, 10), dereg=dt.date(2025, 3, 10)),
        p(4, "M", dt.date(1980, 6, 1), dt.date(2001, 1, 1), dereg=dt.date(2025, 3, 31)),
        p(5, "F", dt.date(1985, 1, 1), dt.date(2025, 3, 20), typ="Temporary"),
        p(6, "M", dt.date(1970, 1, 1), dt.date(2000, 1, 1), dummy=True),
        p(7, "F", dt.date(1920, 3, 1), dt.date(1990, 1, 1)),
        p(8, "M", dt.date(1995, 7, 1), dt.date(2020, 1, 1), dereg=d),
    ]
    got = {(r["sex"], r["age_band"]): r["patients"] for r in truth.list_size(w, d)}
    assert got == {("female", "30-34"): 1, ("male", "0-4"): 1, ("female", "95+"): 1}
