"""The ground truth on tiny populations small enough to count by hand (the worked examples in
marts.md sections 4.6, 4.8, 4.10 and 4.11)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from im1dev.synth import codes, truth
from im1dev.synth.clinical import Appointment, Event, Issue, PatientRecord
from im1dev.synth.world import Patient, build_world

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

R = dt.date(2025, 3, 31)
_ids = itertools.count(1)


def d(s: str) -> int:
    return dt.date.fromisoformat(s).toordinal()


def patient(world, ods: str, age: int, *, on: dt.date = R, reg: str = "2000-01-01") -> Patient:
    prac = world.practice(ods)
    k = next(_ids)
    return Patient(key=k, patient_guid=f"{{P{k}}}", person_guid="{X}", org_guid=prac.org_guid, ods_code=ods,
                   nhs_number="9990000018", sex="F", dob=on.replace(year=on.year - age) - dt.timedelta(days=10),
                   title="", given="", middle="", surname="", postcode="", house="", street="", town="",
                   patient_number=k, reg_date=dt.date.fromisoformat(reg), reg_type="Regular", usual_gp_guid=None)


def ev(day: str, tag: str, code: str, value: float | None = None) -> Event:
    k = next(_ids)
    return Event(id=k, guid=f"{{E{k}}}", date=d(day), entered=d(day), code=code, clinician=1, value=value, tag=tag)


def bp(day: str, sys_v: int, dia_v: int) -> list[Event]:
    return [ev(day, "bp_sys", codes.BP_SYSTOLIC, sys_v), ev(day, "bp_dia", codes.BP_DIASTOLIC, dia_v)]


def world_with(*ods: str):
    w = build_world(seed=1, patients_per_practice=0, ods_codes=list(ods), start=R, casebook=False)
    return w


def run(world, records: dict, as_of=R):
    """records: patient key -> PatientRecord."""
    world.patients = [r.patient for r in records.values()]
    return truth.compute(world, as_of, records=lambda p: records[p.key])


def test_dm_register_rules():
    w = world_with("Z90001")
    dm, res = codes.catalogue().clusters["dm"][0], codes.catalogue().resolved["dm"]
    rec = {}
    for age, events in [
        (45, [ev("2015-06-01", "dx:dm", dm)]),                                          # D1 yes
        (50, [ev("2010-02-01", "dx:dm", dm), ev("2018-03-01", "res:dm", res)]),         # D2 resolved
        (60, [ev("2010-02-01", "dx:dm", dm), ev("2018-03-01", "res:dm", res),
              ev("2020-07-01", "dx:dm", dm)]),                                           # D3 re-diagnosed
        (16, [ev("2024-05-01", "dx:dm", dm)]),                                          # D4 under 17
        (40, [ev("2025-04-15", "dx:dm", dm)]),                                          # D5 after R
        # D6: resolved on the day of the latest diagnosis. marts.md 4.8 counts it as resolved; the
        # official text (BR46-DM 3.2.4: DMRES_DAT = resolved code dated after DMLAT_DAT) keeps the
        # patient on the register, and so does the casebook (dm017-same-day-resolved)
        (55, [ev("2019-01-01", "dx:dm", dm), ev("2019-01-01", "res:dm", res)]),
    ]:
        p = patient(w, "Z90001", age)
        rec[p.key] = PatientRecord(patient=p, events=events)
    t = run(w, rec)
    dm017 = next(r for r in t["qof_registers"] if r["register"] == "DM017" and r["reference_date"] == R.isoformat())
    assert (dm017["register_count"], dm017["list_size_all_ages"], dm017["list_size_age_group"]) == (3, 6, 5)


def test_hyp008_hyp009_bp_control():
    w = world_with("Z90002")
    hyp = codes.catalogue().clusters["hyp"][0]
    rec = {}
    for age, readings in [
        (70, bp("2025-02-10", 138, 88)),                                  # H1 met
        (70, bp("2024-11-01", 142, 80)),                                  # H2 not met
        (85, bp("2025-01-05", 148, 88)),                                  # H3 HYP009 met
        (75, bp("2024-03-01", 120, 70)),                                  # H4 no reading in the last 12 months
        (65, bp("2025-02-01", 130, 80) + bp("2025-03-01", 150, 85)),      # H5 latest wins
        (79, bp("2025-03-20", 145, 85) + bp("2025-03-20", 135, 82)),      # H6 lowest on the latest day
    ]:
        p = patient(w, "Z90002", age)
        rec[p.key] = PatientRecord(patient=p, events=[ev("2015-01-01", "dx:hyp", hyp), *readings])
    ind = {r["indicator"]: (r["numerator"], r["denominator"]) for r in run(w, rec)["qof_indicators"]
           if r["reference_date"] == R.isoformat()}
    assert ind["HYP008"] == (2, 5)
    assert ind["HYP009"] == (1, 1)


def test_dm020_dm021_hba1c_control():
    w = world_with("Z90003")
    dm = codes.catalogue().clusters["dm"][0]
    a1c = codes.HBA1C
    moderate = codes.catalogue().clusters["frailty:moderate"][0]
    rec = {}
    for events in [
        [ev("2012-01-01", "dx:dm", dm), ev("2024-10-01", "hba1c", a1c, 52)],                                # G1
        [ev("2015-01-01", "dx:dm", dm), ev("2024-06-01", "hba1c", a1c, 55), ev("2025-01-15", "hba1c", a1c, 64)],
        [ev("2010-01-01", "dx:dm", dm), ev("2024-01-01", "frailty:moderate", moderate),
         ev("2025-02-01", "hba1c", a1c, 70)],                                                              # G3
        [ev("2016-01-01", "dx:dm", dm), ev("2023-12-01", "hba1c", a1c, 50)],                                # G4
        [ev("2024-09-01", "dx:dm", dm), ev("2025-01-10", "hba1c", a1c, 48)],                                # G5
        [ev("2024-09-01", "dx:dm", dm)],                                                                   # G6
    ]:
        p = patient(w, "Z90003", 60)
        rec[p.key] = PatientRecord(patient=p, events=events)
    # G6 (first diagnosed 2024-09-01, in the 9 months up to PPED, no result) is excluded (rule 9)
    ind = {r["indicator"]: (r["numerator"], r["denominator"], r["pca_count"]) for r in run(w, rec)["qof_indicators"]
           if r["reference_date"] == R.isoformat()}
    assert ind["DM020"] == (2, 4, 1)
    assert ind["DM021"] == (1, 1, 0)


def test_appointments_gpad_categories():
    as_of = dt.date(2025, 5, 31)
    w = world_with("Z90004")
    gp = next(s for s in w.staff if s.role == "GP")
    p = patient(w, "Z90004", 40, on=as_of)

    def appt(booked, date, outcome, mode, outcome_on=None):
        k = next(_ids)
        return Appointment(id=k, guid=f"{{A{k}}}", date=d(date), start_min=600, duration=10, clinician=gp.key,
                           ampm="AM", booked=d(booked), booked_min=540, outcome=outcome,
                           outcome_on=d(outcome_on or date), mode=mode, slot_type="Routine",
                           category="General Consultation Routine", context="Care Related Encounter")

    rec = {p.key: PatientRecord(patient=p, appointments=[
        appt("2025-05-01", "2025-05-01", "attended", "Face to Face (Surgery)"),                 # A1
        appt("2025-04-20", "2025-05-02", "dna", "Telephone/Audio"),                             # A2
        appt("2025-05-02", "2025-05-03", "booked", "Video with Audio"),                         # A3
        appt("2025-05-01", "2025-05-06", "cancelled_patient", "Telephone/Audio", "2025-05-04"),  # A4
        appt("2025-03-01", "2025-05-05", "attended", "Written (Including Online)"),             # A6
    ])}
    rows = run(w, rec, as_of)["appointments"]
    got = {(r["gpad_status"], r["gpad_mode"], r["lead_time_band"]): r["appointments"] for r in rows}
    assert got == {
        ("Attended", "Face-to-Face", "Same Day"): 1,
        ("DNA", "Telephone", "8 to 14 Days"): 1,
        ("Unknown", "Video Conference/Online", "1 Day"): 1,
        ("Attended", "Video Conference/Online", "More than 28 Days"): 1,
    }
    assert {r["hcp_type"] for r in rows} == {"GP"} and {r["appointment_month"] for r in rows} == {"2025-05-01"}


def test_prescribing_items_by_month_and_drug():
    as_of = dt.date(2025, 6, 30)
    w = world_with("Z90005")
    p = patient(w, "Z90005", 50, on=as_of)
    statin = next(x for x in codes.catalogue().drugs if x.key == "atorvastatin20")
    amox = next(x for x in codes.catalogue().drugs if x.key == "amoxicillin500")

    def issue(day, drug, deleted=None):
        k = next(_ids)
        return Issue(id=k, guid=f"{{I{k}}}", auth=1, auth_guid="{A}", drug=drug, date=d(day), entered=d(day),
                     clinician=1, deleted=d(deleted) if deleted else None)

    rec = {p.key: PatientRecord(patient=p, issues=[
        issue("2025-05-02", statin), issue("2025-05-30", statin), issue("2025-05-09", amox),
        issue("2025-06-27", statin), issue("2025-06-28", amox, deleted="2025-06-29"),  # entered in error
        issue("2025-07-02", statin),  # after the data date
    ])}
    got = {(r["issue_month"], r["drug"]): r["items"] for r in run(w, rec, as_of)["prescribing"]}
    assert got == {("2025-05-01", statin.name): 2, ("2025-05-01", amox.name): 1, ("2025-06-01", statin.name): 1}


def test_list_size_prgp_worked_example():
    """marts.md 4.4: snapshot 2025-04-01; P8's registration ends on the date, so it does not count."""
    s = dt.date(2025, 4, 1)
    w = world_with("Z90006")

    def p(sex, dob, reg, typ="Regular", dereg=None, death=None, dummy=False):
        x = patient(w, "Z90006", 30, on=s, reg=reg)
        x.sex, x.dob, x.reg_type, x.dummy = sex, dt.date.fromisoformat(dob), typ, dummy
        x.dereg_date = dt.date.fromisoformat(dereg) if dereg else None
        x.death_date = dt.date.fromisoformat(death) if death else None
        return x

    w.patients = [
        p("F", "1990-05-01", "2010-01-01"),                                                  # P1 30-34
        p("M", "2025-02-01", "2025-03-01"),                                                  # P2 0-4
        p("F", "1950-01-01", "2000-01-01", dereg="2025-03-10", death="2025-03-10"),          # P3 died
        p("M", "1980-06-01", "2001-01-01", dereg="2025-03-31"),                              # P4 left
        p("F", "1985-01-01", "2025-03-20", typ="Temporary"),                                 # P5 temporary
        p("M", "1970-01-01", "2000-01-01", dummy=True),                                      # P6 dummy
        p("F", "1920-03-01", "1990-01-01"),                                                  # P7 95+
        p("M", "1995-07-01", "2020-01-01", dereg="2025-04-01"),                              # P8 ends on D
    ]
    got = {(r["sex"], r["age_band"]): r["patients"] for r in truth.list_size(w, s)}
    assert got == {("female", "30-34"): 1, ("male", "0-4"): 1, ("female", "95+"): 1}
