"""The ground truth (im1dev.synth.truth) agrees with every case of the QOF casebook.

The casebook (dbt_project/casebook/qof_*.yml) is written from the official rule texts; the truth
is the synthetic supplier's own, independent statement of the rules in Python. Each case is built
as a patient of a practice of its supplier (exactly as the supplier plants it) and evaluated on the
case's reference date; every expected answer must come out."""

from __future__ import annotations

import datetime as dt

import pytest

from im1dev.synth import casebook, truth
from im1dev.synth.world import build_world

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

START = dt.date(2026, 11, 1)
BOOK = casebook.load()


def _worlds():
    return {s: build_world(seed=3, patients_per_practice=0, ods_codes=["Z90100"], start=START, supplier=s,
                           casebook=False) for s in ("emis", "tpp")}


WORLDS = _worlds()


def evaluate(case: casebook.Case, supplier: str) -> dict | None:
    world = WORLDS[supplier]
    practice = world.practices[0]
    p = casebook.case_patient(world, practice, case, key=1, number=1, nhs_number="9990000018", usual_gp=None)
    rec = casebook.case_record(world, p, world.staff_of(practice.ods_code))
    view = truth._View(rec, START, supplier)
    kind = "achievement" if (case.reference_date.month, case.reference_date.day) == (3, 31) else "month_end"
    return truth.qof_patient(view, truth.QofDate(case.reference_date, kind))


@pytest.mark.parametrize("case", BOOK.cases, ids=lambda c: c.id)
def test_truth_agrees_with_the_casebook(case: casebook.Case):
    for supplier in case.suppliers:
        got = evaluate(case, supplier)
        where = f"{case.id} ({supplier}; {case.citation})"
        if case.population is not None:
            assert (got is not None) == bool(case.population["in"]), where
            if got is not None:
                assert got["age"] == case.population["age"], where
                assert got["registration_date"] == case.population["registration_date"], where
        if case.registers or case.indicators:
            assert got is not None, f"{where}: not in the QOF population"
        for reg, (on, reason) in case.registers.items():
            if reason == "no_diagnosis":
                assert reg not in got["registers"], where
            else:
                assert got["registers"].get(reg) == (on, reason), where
        for ind, expected in case.indicators.items():
            assert got["indicators"].get(ind) == expected, where


def test_casebook_cites_and_covers_every_rule():
    """Every register and indicator of the marts has cases, each case cites a source, and every
    exclusion reason of both rule chains is exercised."""
    registers = {r for c in BOOK.cases for r in c.registers}
    assert registers == set(casebook.register_rules())
    indicators = {i for c in BOOK.cases for i in c.indicators}
    assert indicators == set(casebook.indicator_rules())
    reasons = {reason for c in BOOK.cases for _s, reason in c.indicators.values()}
    assert casebook.EXCLUSION_REASONS <= reasons
    assert all(c.source in BOOK.sources and c.rule for c in BOOK.cases)
    for reg in casebook.register_rules():
        outcomes = {on for c in BOOK.cases for r, (on, _why) in c.registers.items() if r == reg}
        assert outcomes == {True, False}, f"{reg} needs a positive and a negative case"


def test_committed_unit_tests_are_the_compiled_casebook():
    assert not casebook.stale(), "run `im1 casebook gen` and commit dbt_project/models/intermediate/qof/_qof__casebook_unit_tests.yml"


RX_CASES = [c for c in BOOK.cases if c.prescribing is not None]


def _rx_row(row: dict) -> dict:
    """A truth row in the casebook's columns and types."""
    out = {k: row[k] for k in casebook.PRESCRIBING_COLUMNS}
    out["issue_month"] = dt.date.fromisoformat(row["issue_month"])
    return out


@pytest.mark.parametrize("case", RX_CASES, ids=lambda c: c.id)
def test_truth_agrees_with_the_prescribing_casebook(case: casebook.Case):
    """The case alone at a practice: the truth's prescribing rows on the case's reference date are
    exactly the case's (items, quantity, private prescriptions, names and BNF codes from the
    mapping, the unmapped bucket, list size on the first of the month)."""
    for supplier in case.suppliers:
        world = WORLDS[supplier]
        practice = world.practices[0]
        p = casebook.case_patient(world, practice, case, key=1, number=1, nhs_number="9990000018", usual_gp=None)
        rec = casebook.case_record(world, p, world.staff_of(practice.ods_code))
        view = truth._View(rec, case.reference_date, supplier)
        got = truth.patient_prescribing(view, practice.ods_code, case.reference_date)
        want = sorted(case.prescribing, key=lambda r: (r["issue_month"], r["dmd_code"]))
        assert [_rx_row(r) for r in got["prescribing"]] == want, f"{case.id} ({supplier}; {case.citation})"


def test_prescribing_casebook_covers_every_rule():
    """Every prescribing source is cited by a case, both suppliers carry the cases they can send,
    and private prescriptions (which only EMIS flags) are EMIS cases."""
    cited = {c.source for c in RX_CASES}
    assert {"NHSBSA-EPD", "NHSBSA-EXCL", "PRGP-SNAPSHOT", "MARTS-RX"} <= cited
    for c in RX_CASES:
        private = any(e.private for e in c.events)
        assert c.suppliers == (("emis",) if private else ("emis", "tpp")), c.id
    assert any(r["drug"] is None and r["dmd_code"] for c in RX_CASES for r in c.prescribing)  # unmapped bucket
    assert any(r["list_size"] is None for c in RX_CASES for r in c.prescribing)  # no list size on the 1st
