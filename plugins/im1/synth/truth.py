"""Ground truth for the marts, computed straight from the simulated world (never from files or dbt).

Definitions follow ``marts.md``: a patient counts on a snapshot date D when they hold a
Regular registration with start <= D and (no end or end > D), are alive on D (no death date or
death date > D) and are not a dummy/test patient. Age is completed years on D.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from pathlib import Path

from im1.synth.world import World

SEX_LABEL = {"M": "male", "F": "female", "I": "indeterminate", "U": "unknown"}


def age_on(dob: dt.date, on: dt.date) -> int:
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def age_band(age: int) -> str:
    if age >= 95:
        return "95+"
    lo = (age // 5) * 5
    return f"{lo}-{lo + 4}"


def list_size(world: World, on: dt.date) -> list[dict]:
    """Registered patients by practice, sex and 5-year age band on ``on``."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for p in world.patients:
        if p.reg_type != "Regular" or p.dummy:
            continue
        if p.reg_date > on or (p.dereg_date is not None and p.dereg_date <= on):
            continue
        if p.death_date is not None and p.death_date <= on:
            continue
        if p.dob > on:
            continue
        counts[(p.ods_code, SEX_LABEL[p.sex], age_band(age_on(p.dob, on)))] += 1
    return [
        {"practice_code": k[0], "snapshot_date": on.isoformat(), "sex": k[1], "age_band": k[2], "patients": v}
        for k, v in sorted(counts.items())
    ]


def write_csv(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        if rows:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return path
