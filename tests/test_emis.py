"""EMIS file names (current 6-part and legacy 5-part) and batch grouping."""

from __future__ import annotations

import datetime as dt

import pytest

from im1 import emis, specs

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

AG = "45E7CD20-EE37-41AB-90D6-DC9D4B03D102"


def test_current_and_legacy_names_parse():
    cur = emis.parse_name(f"delta_000042_CareRecord_Observation_20261102020000_{AG}.csv.gpg")
    assert (cur.style, cur.batch_key, cur.table, cur.export_type, cur.is_bulk) == (
        "current", "delta_000042", "CareRecord_Observation", "delta", False)
    assert cur.extract_ts == dt.datetime(2026, 11, 2, 2, 0) and cur.encrypted
    assert cur.plain_name.endswith(".csv")
    leg = emis.parse_name(f"291-300_Agreements_SharingOrganisation_20150211164536_{AG.lower()}.csv.gpg")
    assert (leg.style, leg.batch_key, leg.table, leg.agreement_guid) == (
        "legacy", "291-300", "Agreements_SharingOrganisation", AG)
    assert leg.is_bulk is None


@pytest.mark.parametrize("name", [
    "CareRecord_Observation.csv.gpg",
    f"bulk_000001_CareRecord_Observation_20261302020000_{AG}.csv.gpg",  # month 13
    f"300-291_Admin_Patient_20150211164536_{AG}.csv.gpg",  # range runs backwards
    "bulk_000001_CareRecord_Observation_20261102020000_NOT-A-GUID.csv.gpg",
])
def test_bad_names_are_rejected_with_a_reason(name):
    with pytest.raises(emis.FileNameError):
        emis.parse_name(name)


def test_format_name_round_trips():
    ts = dt.datetime(2026, 11, 2, 2, 0)
    for kw in ({"export_type": "bulk", "batch_number": 1}, {"legacy_pids": "1-5"}):
        name = emis.format_name("Admin_Patient", ts, AG, **kw)
        fn = emis.parse_name(name)
        assert fn.table == "Admin_Patient" and fn.extract_ts == ts


def test_batches_group_by_key_and_timestamp_and_report_completeness():
    ts1, ts2 = dt.datetime(2026, 11, 2, 2), dt.datetime(2026, 11, 3, 2)
    items = [(emis.format_name(t, ts1, AG, batch_number=1), t) for t in specs.emis_expected_tables()]
    items += [(emis.format_name("Admin_Patient", ts2, AG, export_type="delta", batch_number=2), "x")]
    items += [("README.txt", None), (emis.format_name("Admin_Patient", ts1, "0" * 8 + AG[8:], batch_number=1), 1)]
    batches, foreign = emis.group_batches(items, AG)
    assert [b.key for b in batches] == ["bulk_000001@20261102020000", "delta_000002@20261103020000"]
    assert batches[0].is_complete() and not batches[1].is_complete()
    assert "Admin_Location" in batches[1].missing_tables()
    assert len(foreign) == 2


def test_v80_batches_need_the_same_21_tables():
    assert len(specs.emis_expected_tables("8.0")) == 21


def test_a_name_with_a_trailing_newline_is_not_a_delivery_file():
    """Issue 13: ``$`` also matches before a final newline, so ``<name>.csv.gpg\\n`` was taken as that
    table's newest file (a hostile or broken site can create such a name)."""
    good = f"delta_000042_CareRecord_Observation_20261102020000_{AG}.csv.gpg"
    assert emis.parse_name(good).table == "CareRecord_Observation"
    for bad in (good + "\n", good + "\r\n", good[:-4] + "\n"):
        with pytest.raises(emis.FileNameError):
            emis.parse_name(bad)
