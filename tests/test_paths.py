"""Local names and ledger keys for names a supplier chose: one-to-one and bounded (issue 13)."""

from __future__ import annotations

import os

import pytest

from im1 import paths

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it


def test_plain_names_are_kept():
    for name in ("SRPatient.csv", "20261102_0000", "bulk_000001_20261102020000", "a~b.csv", "x" * 240):
        assert paths.local_name(name) == name
    for key in ("20261102_0000", "group-1/20261102_0000", "a__20261102_0000", "k" * 200):
        assert paths.bounded_key(key) == key


def test_a_separator_a_long_name_or_a_hashed_look_alike_never_meet():
    long = "SR" + "Q" * 249 + ".csv"
    tricky = ["a/20261102_0000", "a__20261102_0000", long, long[:-5] + "R.csv", ".", "..", "bad\nname.csv",
              "SRPatient.csv\n", "caf\udce9.csv", "x" * 241, "x" * 242]
    # a plain name shaped like another name's hashed form stays apart from it
    tricky += [paths.local_name(n) for n in tricky]
    local = {n: paths.local_name(n) for n in tricky}
    assert len(set(local.values())) == len(set(tricky))
    for n, got in local.items():
        b = os.fsencode(got)
        assert len(b) + len(b".part") <= paths.NAME_MAX and b"/" not in b and got not in ("", ".", ".."), n
        got.encode("utf-8")  # the ledger can record it
    assert local["a/20261102_0000"].startswith("a__20261102_0000~")
    assert local[long].startswith("SRQQQQ") and local[long].endswith(".csv")


def test_ledger_keys_are_one_to_one_and_bounded():
    deep = "/".join(f"reporting-level-{i:02d}" for i in range(16)) + "/20261102_0000"
    keys = [deep, deep[:-1] + "1", "k" * 201, "k" * 202, "caf\udce9/20261102_0000"]
    keys += [paths.bounded_key(k) for k in keys]
    got = {k: paths.bounded_key(k) for k in keys}
    assert len(set(got.values())) == len(set(keys))
    assert all(len(v) <= paths.KEY_MAX for v in got.values())
    assert got[deep].startswith("reporting-level-00/reporting-level-01/")
    assert paths.bounded_key(deep) == got[deep]  # stable from run to run


def test_a_supplier_name_never_becomes_another_files_partial_download():
    # a held batch archives every file as delivered; "X.part" must not be where "X" resumes from
    part = paths.local_name("SRPatient.csv.part")
    assert part != paths.local_name("SRPatient.csv") + ".part"
    assert paths.local_name("SRPatient.csv") == "SRPatient.csv"
