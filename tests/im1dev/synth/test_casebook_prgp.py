"""The PRGP and publication cases of the casebook (dbt_project/casebook/prgp_list_size.yml,
publication.yml) against the ground truth: the truth's list size and small-number rule must say
what the official texts say, case by case."""

from __future__ import annotations

from decimal import Decimal

import pytest

from im1dev.synth import casebook, truth
from im1dev.synth.clinical import PatientRecord
from im1dev.synth.world import build_world

pytestmark = pytest.mark.unit

PRGP_SEX = {"male": "MALE", "female": "FEMALE"}  # PRGP publishes no other sex (ALL = Male + Female)


def _prgp_cases():
    return [c for c in casebook.load().cases if c.list_size is not None]


def test_prgp_cases_exist():
    ids = {c.id for c in _prgp_cases()}
    assert {"prgp-registered", "prgp-age-95-plus", "prgp-indeterminate-sex", "prgp-reregistered-past-snapshot"} <= ids


@pytest.mark.parametrize("case", _prgp_cases(), ids=lambda c: c.id)
def test_prgp_case_matches_truth(case):
    for supplier in case.suppliers:
        world = build_world(seed=5, patients_per_practice=0, ods_codes=["Z90100"], start=case.reference_date,
                            supplier=supplier, casebook=False)
        practice = world.practices[0]
        patient = casebook.case_patient(world, practice, case, key=1, number=1, nhs_number="9000000009",
                                        usual_gp=None)
        view = truth._View(PatientRecord(patient=patient), case.reference_date, supplier)
        want = case.list_size
        assert view.registered_on(case.reference_date) == want["counted"], (supplier, case.id)
        if not want["counted"]:
            continue
        age = truth.age_on(patient.dob, case.reference_date)
        assert truth.age_single(age) == str(want["age"]) and truth.age_band(age) == str(want["band"])
        assert PRGP_SEX.get(truth.SEX_LABEL[patient.sex]) == want["sex"]


def _dec(v):
    return None if v is None else Decimal(str(v))


@pytest.mark.parametrize("case", casebook.publication_cases(), ids=lambda c: c["id"])
def test_publication_case_matches_truth(case):
    want = case["expect"]
    if "count" in case:
        assert truth.sdc_count(case["count"]) == want["published"]
    if "counts" in case:
        assert [truth.sdc_count(n) for n in case["counts"]] == want["published"]
        if "total" in want:
            assert truth.sdc_count(sum(case["counts"])) == want["total"]
    if "numerator" in case:
        assert truth.sdc_rate(case["numerator"], case["denominator"]) == _dec(want["rate_pct"])
