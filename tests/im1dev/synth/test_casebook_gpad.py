"""The ground truth (im1dev.synth.truth) agrees with every case of the GPAD casebook.

The casebook (dbt_project/casebook/gpad_*.yml) states, from the official texts, how GPAD counts one
booked slot (status, mode, HCP type, lead-time band; or not counted). The truth is the synthetic
supplier's own statement of the GPAD rules: each case's slot is built as the generator builds an
appointment and judged a month after it was held. The same cases are compiled into the dbt unit
tests of int_appointments, where each slot goes through EMIS and through SystmOne and must give
the same GPAD row (``im1 casebook gen``; committed, checked not stale here)."""

from __future__ import annotations

import datetime as dt

import pytest

from im1dev.synth import casebook, clinical, emis, tpp, truth

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

CASES = casebook.load_gpad()


def _appointment(case: casebook.GpadCase) -> clinical.Appointment:
    s = case.slot
    day, booked = s.date.toordinal(), s.booked.toordinal()
    return clinical.Appointment(
        id=1, guid="00000000-0000-0000-0000-000000000001", date=day, start_min=9 * 60, duration=10, clinician=1,
        ampm="AM", booked=booked, booked_min=8 * 60, outcome=s.outcome,
        outcome_on=day if s.outcome in ("attended", "dna", "booked") else booked, mode=s.mode,
        slot_type="Routine", category="General Consultation Routine", context=s.context)


def test_the_gpad_casebook_covers_every_rule():
    ids = {c.id.split("-")[1] for c in CASES}
    assert {"mode", "status", "hcp", "context", "lead"} <= ids
    assert {c.slot.mode for c in CASES} == set(truth.GPAD_MODE)  # all six national modes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_truth_agrees_with_the_gpad_casebook(case: casebook.GpadCase):
    as_of = (case.slot.date + dt.timedelta(days=30)).toordinal()
    got = truth.gpad_cell(_appointment(case), case.slot.role, as_of)
    assert got == case.expect, f"{case.id} ({case.citation})"


@pytest.mark.parametrize("case", [c for c in CASES if c.suppliers == ("emis", "tpp")], ids=lambda c: c.id)
def test_both_suppliers_can_send_the_slot(case: casebook.GpadCase):
    """What the synthetic supplier sends for the slot: EMIS the national mode and a SlotStatus of
    the seed; SystmOne an SRMapping status of the seed and the appointment method as a flag, or
    (Not an Appointment) no method - both then reach the same GPAD mode."""
    import csv

    from im1 import paths

    seeds = paths.dbt_project_dir() / "seeds" / "gpad"
    with open(seeds / "gpad_appointment_mode_map.csv", newline="") as fh:
        modes = {(r["supplier"], r["source_mode"]): r["gpad_mode"] for r in csv.DictReader(fh)}
    with open(seeds / "gpad_appointment_status_map.csv", newline="") as fh:
        statuses = {(r["supplier"], r["source_status"]): r["gpad_status"] or None for r in csv.DictReader(fh)}
    s = case.slot
    emis_mode = modes.get(("emis", s.mode), "Unknown")
    method = tpp.APPOINTMENT_METHOD.get(s.mode)
    tpp_mode = modes[("tpp", method)] if method else "Unknown"
    assert emis_mode == tpp_mode
    assert statuses[("emis", emis.SLOT_STATUS[s.outcome])] == statuses[("tpp", tpp.APPOINTMENT_STATUS[s.outcome][1])]
    if case.expect is not None:
        assert emis_mode == case.expect[1]


def test_compiled_unit_tests_are_current():
    assert not casebook.stale(), ("run `im1 casebook gen` and commit "
                                  "dbt_project/models/intermediate/activity/_activity__casebook_unit_tests.yml")
