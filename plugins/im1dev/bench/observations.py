"""Big, realistic CareRecord_Observation files, fast (for the ingest benchmark and the reliability tests).

Rows follow the v8.2 spec columns in the EMIS dialect (every field quoted, CRLF, UTF-8, braced
upper-case GUIDs, ISO dates, ``true``/``false``): unique observation GUIDs, patients drawn from a
35,000-patient list per practice, clinicians from a small staff list, SNOMED CT codes from the
project's code lists (blood pressures with values and units, diagnoses without), consultations,
some child observations and some confidential or deleted rows. Values are picked by index
arithmetic, not per-row random calls, so two million rows take seconds and the same arguments
always give the same file.
"""

from __future__ import annotations

import csv
import datetime as dt
import uuid
from pathlib import Path

from im1 import paths, specs

TABLE = "CareRecord_Observation"
PATIENTS_PER_PRACTICE = 35_000


_MIX = 0x9E3779B97F4A7C15F39CC0605CEDC835  # an odd 128-bit constant: i -> well-spread, distinct GUIDs


def _guids(seed: int, n: int, tag: int) -> list[str]:
    start = (seed << 20 | tag) * 1_000_003
    return ["{" + str(uuid.UUID(int=((start + i) * _MIX) & (2**128 - 1), version=4)).upper() + "}"
            for i in range(n)]


def _codes() -> list[tuple[str, str, str, str, str]]:
    """(CodeId, Value, NumericUnit, ObservationType, Episode) choices from the code lists."""
    out = []
    # the project's clinical code lists (include/codelists, or the dbt seeds where they may move)
    lists = next((d for d in (paths.include_dir() / "codelists", paths.dbt_project_dir() / "seeds" / "codelists")
                  if d.is_dir()), paths.include_dir() / "codelists")
    numeric = {"bp_systolic_qof.csv": ("mmHg", 95, 190), "bp_diastolic_qof.csv": ("mmHg", 55, 110),
               "ifcchbam_cod.csv": ("mmol/mol", 30, 110)}
    for name in ("hyp_cod.csv", "ast_cod.csv", "dm_cod.csv", "bp_systolic_qof.csv", "bp_diastolic_qof.csv",
                 "ifcchbam_cod.csv", "lsmok_cod.csv", "exsmok_cod.csv", "depr_cod.csv", "chd_cod.csv"):
        p = lists / name
        if not p.exists():
            continue
        with p.open(newline="", encoding="utf-8") as fh:
            codes = [r["code"] for r in csv.DictReader(fh) if r.get("code")][:60]
        for i, code in enumerate(codes):
            if name in numeric:
                unit, lo, hi = numeric[name]
                value = str(lo + (i * 37) % (hi - lo))
                out.append((code, value, unit, "Value", "First"))
            else:
                out.append((code, "", "", "Observation", ("First", "New", "Review", "Ongoing")[i % 4]))
    return out or [("271649006", "128", "mmHg", "Value", "First")]


def header(version: str = specs.LATEST_EMIS_VERSION) -> list[str]:
    return specs.emis_table(TABLE).column_names(version)


def write(path: Path, rows: int, *, org_guids: list[str], seed: int = 1) -> int:
    """Write ``rows`` observations spread over ``org_guids`` (round robin) to ``path``; returns rows."""
    cols = header()
    assert cols[0] == "ObservationGuid", cols
    patients = {o: _guids(seed, PATIENTS_PER_PRACTICE, 0x100 + k) for k, o in enumerate(org_guids)}
    staff = _guids(seed, 40, 0x200)
    consultations = _guids(seed, 50_000, 0x300)
    codes = _codes()
    base = dt.date(2026, 10, 31)
    dates = [(base - dt.timedelta(days=d)).isoformat() for d in range(0, 3650, 3)]
    times = [f"{8 + (m // 60) % 10:02d}:{m % 60:02d}:00" for m in range(0, 600, 7)]
    n_org, n_pat, n_staff, n_con = len(org_guids), PATIENTS_PER_PRACTICE, len(staff), len(consultations)
    n_codes, n_dates, n_times = len(codes), len(dates), len(times)
    mix = 0x9E3779B97F4A7C15
    top = f"{{{(seed * 0x2545F491) & 0xFFFFFFFF:08X}-"
    cols_expected = ["ObservationGuid", "PatientGuid", "OrganisationGuid", "EffectiveDate", "EffectiveDatePrecision",
                     "EnteredDate", "EnteredTime", "ClinicianUserInRoleGuid", "EnteredByUserInRoleGuid",
                     "ParentObservationGuid", "CodeId", "ProblemGuid", "ConsultationGuid", "Value", "NumericUnit",
                     "ObservationType", "NumericRangeLow", "NumericRangeHigh", "DocumentGuid", "Qualifiers",
                     "Abnormal", "AbnormalReason", "Episode", "Deleted", "IsConfidential", "ProcessingId"]
    assert cols == cols_expected, "the spec's Observation columns changed: update the generator"
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk: list[str] = []
    prev = ""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write('"' + '","'.join(cols) + '"\r\n')
        for i in range(rows):
            org = org_guids[i % n_org]
            pat = patients[org][(i * 7919) % n_pat]
            code, value, unit, otype, episode = codes[(i * 31) % n_codes]
            eff = dates[(i * 13) % n_dates]
            clin = staff[(i * 3) % n_staff]
            h = (i * mix) & 0xFFFFFFFFFFFFFFFF  # distinct for every i (an odd multiplier is a bijection)
            guid = f"{top}{h >> 48:04X}-4{(h >> 36) & 0xFFF:03X}-A{(h >> 24) & 0xFFF:03X}-{h & 0xFFFFFF:06X}{i & 0xFFFFFF:06X}}}"
            parent = prev if i % 10 == 9 else ""
            prev = guid
            low, high = ("", "") if not value else ("90", "140") if unit == "mmHg" else ("20", "42")
            chunk.append(
                f'"{guid}","{pat}","{org}","{eff}","YMD","{eff}","{times[i % n_times]}","{clin}","{clin}",'
                f'"{parent}","{code}","","{consultations[(i * 17) % n_con]}","{value}","{unit}","{otype}",'
                f'"{low}","{high}","","","{"true" if value and i % 23 == 0 else "false"}","","{episode}",'
                f'"{"true" if i % 997 == 0 else "false"}","{"true" if i % 101 == 0 else "false"}","{1 + i // 5000}"\r\n'
            )
            if len(chunk) >= 20_000:
                fh.write("".join(chunk))
                chunk.clear()
        fh.write("".join(chunk))
    return rows
