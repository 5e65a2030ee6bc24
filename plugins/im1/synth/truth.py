"""Ground truth for the marts, computed straight from the simulated world's facts.

Never from the delivered files and never by dbt: this module reads :mod:`im1.synth.clinical`
facts with the same "as entered by the data date" rule a delivery uses, and applies the NHS
definitions in ``marts.md`` (simplified where noted). Every mart built by dbt must equal these
numbers exactly for the same world and data date.

Shared definitions
- Registered on date S: Regular registration with start <= S and (no end or end > S), alive on S
  (no death or death > S), not a dummy/test patient. A registration end or death counts once the
  practice has recorded it (on or before the data date).
- Age: completed years on the date. 5-year bands 0-4 ... 90-94, 95+ (PRGP).
- "In the last 12 months" before R: R minus 12 calendar months < event date <= R.
- Shared-care rows (recorded by another organisation, TPP) are not the practice's and never count.
- A diagnosis of a register's condition is any entry coded with a concept of the condition's code
  list, whatever made the entry: some concepts are in two lists (AST_COD and COPD_COD share three,
  HYP_COD and CKD_COD share three, e.g. "Hypertension in chronic kidney disease stage 5 ..."), and
  QOF counts such an entry for both registers. Likewise a resolution is the condition's resolved code.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
from collections import Counter, defaultdict
from pathlib import Path

from im1.synth import codes
from im1.synth.clinical import PatientRecord, patient_record
from im1.synth.world import World

SEX_LABEL = {"M": "male", "F": "female", "I": "indeterminate", "U": "unknown"}
LIST_SIZE_MONTHS = 12  # list size on the first of this many months before the data date's month, and it

# register rules: minimum age, whether a resolved code can take a patient off, earliest diagnosis date
REGISTERS = {
    "DM017": ("dm", 17, True, None),
    "HYP001": ("hyp", 0, True, None),
    "AST005": ("ast", 6, True, None),
    "COPD": ("copd", 0, True, None),
    "CHD001": ("chd", 0, False, None),
    "AF001": ("af", 0, True, None),
    "CKD005": ("ckd", 18, True, None),
    "DEP003": ("dep", 18, True, dt.date(2006, 4, 1)),
}
GPAD_MODE = {
    "Face to Face (Surgery)": "Face-to-Face",
    "Face to Face (Home Visit)": "Home Visit",
    "Telephone/Audio": "Telephone",
    "Video with Audio": "Video Conference/Online",
    "Written (Including Online)": "Video Conference/Online",
    "Not an Appointment": "Unknown",
}


@functools.cache
def _register_codes() -> tuple[dict[str, frozenset], dict[str, frozenset]]:
    """Diagnosis and resolved concepts per condition, from the code lists (not from how facts were made)."""
    cat = codes.catalogue()
    dx = {c: frozenset(cat.clusters[c]) for c in codes.CONDITIONS}
    res = {c: frozenset([cat.resolved[c]]) if c in cat.resolved else frozenset() for c in codes.CONDITIONS}
    return dx, res


def age_on(dob: dt.date, on: dt.date) -> int:
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def age_band(age: int) -> str:
    if age >= 95:
        return "95+"
    lo = (age // 5) * 5
    return f"{lo}-{lo + 4}"


def months_before(d: dt.date, months: int) -> dt.date:
    """The same day ``months`` calendar months earlier (clamped to the month's last day)."""
    y, m = divmod(d.month - 1 - months, 12)
    year, month = d.year + y, m + 1
    for day in (d.day, 30, 29, 28):
        try:
            return dt.date(year, month, day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def lead_time_band(days: int | None) -> str:
    if days is None or days < 0:
        return "Unknown / Data Quality"
    if days == 0:
        return "Same Day"
    if days == 1:
        return "1 Day"
    for lo, hi, label in ((2, 7, "2 to 7 Days"), (8, 14, "8 to 14 Days"), (15, 21, "15 to 21 Days"),
                          (22, 28, "22 to 28 Days")):
        if lo <= days <= hi:
            return label
    return "More than 28 Days"


def snapshot_dates(as_of: dt.date) -> list[dt.date]:
    """First-of-month list-size dates: the data date's month and the LIST_SIZE_MONTHS before it."""
    first = as_of.replace(day=1)
    return [months_before(first, k) for k in range(LIST_SIZE_MONTHS, -1, -1)]


class _View:
    """A patient's facts as known on the data date."""

    def __init__(self, rec: PatientRecord, as_of: dt.date):
        self.rec = rec
        self.p = rec.patient
        d = as_of.toordinal()
        self.d = d
        known_left = self.p.left_known(as_of)
        self.end = self.p.dereg_date if known_left else None
        self.death = self.p.death_date if known_left else None
        self.visible = self.p.reg_date <= as_of
        self.events = [e for e in rec.events
                       if e.entered <= d and (e.deleted is None or e.deleted > d) and e.org is None]

    def registered_on(self, s: dt.date) -> bool:
        p = self.p
        return (self.visible and p.reg_type == "Regular" and not p.dummy and p.reg_date <= s and p.dob <= s
                and (self.end is None or self.end > s) and (self.death is None or self.death > s))

    def value(self, e) -> float | None:
        v = e.value
        for when, fld, val in e.changes or ():
            if when <= self.d and fld == "value":
                v = val
        return v


def compute(world: World, as_of: dt.date, records=None) -> dict[str, list[dict]]:
    """Every truth table for data date ``as_of``.

    ``records`` (patient -> PatientRecord) replaces the generated facts, e.g. with a hand-built
    population in tests.
    """
    list_counts: Counter = Counter()
    reg_counts: Counter = Counter()
    denoms: Counter = Counter()
    bp: Counter = Counter()
    a1c: Counter = Counter()
    appts: Counter = Counter()
    rx: Counter = Counter()
    staff = {s.key: s for s in world.staff}
    dates = snapshot_dates(as_of)
    r = as_of
    r12 = months_before(r, 12)
    r9 = months_before(r, 9)
    staff_by_ods = {p.ods_code: world.staff_of(p.ods_code) for p in world.practices if p.activated}
    for p in (world.patients if records else world.delivered_patients()):
        rec = records(p) if records else patient_record(world, p, staff_by_ods[p.ods_code])
        v = _View(rec, as_of)
        if not v.visible:
            continue
        ods, sex = p.ods_code, SEX_LABEL[p.sex]
        for s in dates:
            if v.registered_on(s):
                list_counts[(ods, s, sex, age_band(age_on(p.dob, s)))] += 1
        # -- appointments (GPAD) and prescribing: everything the practice recorded -----------
        for a in rec.appointments:
            if a.booked > v.d or a.date > v.d or a.context != "Care Related Encounter":
                continue
            known = a.outcome_on <= v.d and a.outcome != "booked"
            status = {"attended": "Attended", "dna": "DNA"}.get(a.outcome) if known else "Unknown"
            if status is None:
                continue  # cancelled: not an appointment for GPAD
            day = dt.date.fromordinal(a.date)
            appts[(ods, day.replace(day=1), status, GPAD_MODE[a.mode], staff[a.clinician].hcp_type,
                   lead_time_band(a.date - a.booked))] += 1
        for i in rec.issues:
            if i.entered <= v.d and (i.deleted is None or i.deleted > v.d):
                rx[(ods, dt.date.fromordinal(i.date).replace(day=1), i.drug.dmd, i.drug.name)] += 1
        # -- registers and indicators on the reference date R = the data date ----------------
        if not v.registered_on(r):
            continue
        age = age_on(p.dob, r)
        for reg, (_cond, min_age, _res, _since) in REGISTERS.items():
            denoms[(ods, reg, "all")] += 1
            if age >= min_age:
                denoms[(ods, reg, "age")] += 1
        on = {reg: _on_register(v, reg, age) for reg in REGISTERS}
        for reg, flag in on.items():
            if flag:
                reg_counts[(ods, reg)] += 1
        if on["HYP001"]:
            ind = "HYP008" if age <= 79 else "HYP009"
            limit = 140 if ind == "HYP008" else 150
            reading = _latest_bp(v, r12.toordinal(), r.toordinal())
            met = reading is not None and reading[0] <= limit and reading[1] <= 90
            bp[(ods, ind, "denominator")] += 1
            bp[(ods, ind, "numerator")] += met
        if on["DM017"]:
            frailty = _latest(v, "frailty:", r.toordinal())
            moderate_or_severe = frailty is not None and frailty.tag in ("frailty:moderate", "frailty:severe")
            ind, limit = ("DM021", 75) if moderate_or_severe else ("DM020", 58)
            value = _latest_value(v, "hba1c", r12.toordinal(), r.toordinal())
            met = value is not None and value <= limit
            dm_codes = _register_codes()[0]["dm"]
            latest_dx = max(e.date for e in v.events if e.code in dm_codes and e.date <= r.toordinal())
            recent = latest_dx > r9.toordinal() or p.reg_date > r9
            if met or not recent:  # the target is checked before the 9-month rejections
                a1c[(ods, ind, "denominator")] += 1
                a1c[(ods, ind, "numerator")] += met
    return _tables(world, as_of, list_counts, reg_counts, denoms, bp, a1c, appts, rx)


def _latest(v: _View, prefix: str, until: int):
    best = None
    for e in v.events:
        if e.tag.startswith(prefix) and e.date <= until and (best is None or (e.date, e.id) > (best.date, best.id)):
            best = e
    return best


def _on_register(v: _View, reg: str, age: int) -> bool:
    cond, min_age, resolvable, since = REGISTERS[reg]
    if age < min_age:
        return False
    r = v.d
    dx_codes, res_codes = _register_codes()
    dx = [e.date for e in v.events if e.code in dx_codes[cond] and e.date <= r]
    if not dx:
        return False
    latest = max(dx)
    if since is not None and latest < since.toordinal():
        return False
    if not resolvable:
        return True
    res = [e.date for e in v.events if e.code in res_codes[cond] and e.date <= r]
    return not res or max(res) < latest  # a resolution on the same day counts as resolved


def _latest_bp(v: _View, after: int, until: int) -> tuple[float, float] | None:
    """Lowest systolic and lowest diastolic on the latest day with both, in (after, until]."""
    sys_by_day: dict[int, list[float]] = defaultdict(list)
    dia_by_day: dict[int, list[float]] = defaultdict(list)
    for e in v.events:
        if after < e.date <= until and e.tag in ("bp_sys", "bp_dia"):
            val = v.value(e)
            if val is None:
                continue
            if e.tag == "bp_sys" and 40 <= val <= 300:
                sys_by_day[e.date].append(val)
            elif e.tag == "bp_dia" and 20 <= val <= 200:
                dia_by_day[e.date].append(val)
    days = set(sys_by_day) & set(dia_by_day)
    if not days:
        return None
    d = max(days)
    return min(sys_by_day[d]), min(dia_by_day[d])


def _latest_value(v: _View, tag: str, after: int, until: int) -> float | None:
    """The lowest value on the latest day with a value, in (after, until]."""
    by_day: dict[int, list[float]] = defaultdict(list)
    for e in v.events:
        if e.tag == tag and after < e.date <= until:
            val = v.value(e)
            if val is not None and 20 <= val <= 200:
                by_day[e.date].append(val)
    if not by_day:
        return None
    return min(by_day[max(by_day)])


def _tables(world, as_of, list_counts, reg_counts, denoms, bp, a1c, appts, rx) -> dict[str, list[dict]]:
    practices = [p.ods_code for p in world.practices if p.activated]
    out: dict[str, list[dict]] = {}
    out["list_size"] = [
        {"practice_code": k[0], "snapshot_date": k[1].isoformat(), "sex": k[2], "age_band": k[3], "patients": n}
        for k, n in sorted(list_counts.items())
    ]
    out["qof_registers"] = [
        {"practice_code": ods, "reference_date": as_of.isoformat(), "register": reg,
         "register_count": reg_counts[(ods, reg)], "list_size_all_ages": denoms[(ods, reg, "all")],
         "list_size_age_group": denoms[(ods, reg, "age")]}
        for ods in practices for reg in REGISTERS
    ]
    out["qof_indicators"] = [
        {"practice_code": ods, "reference_date": as_of.isoformat(), "indicator": ind,
         "numerator": src[(ods, ind, "numerator")], "denominator": src[(ods, ind, "denominator")]}
        for ods in practices for ind, src in (("HYP008", bp), ("HYP009", bp), ("DM020", a1c), ("DM021", a1c))
    ]
    out["appointments"] = [
        {"practice_code": k[0], "appointment_month": k[1].isoformat(), "gpad_status": k[2], "gpad_mode": k[3],
         "hcp_type": k[4], "lead_time_band": k[5], "appointments": n}
        for k, n in sorted(appts.items())
    ]
    out["prescribing"] = [
        {"practice_code": k[0], "issue_month": k[1].isoformat(), "dmd_code": k[2], "drug": k[3], "items": n}
        for k, n in sorted(rx.items())
    ]
    return out


def list_size(world: World, on: dt.date, as_of: dt.date | None = None) -> list[dict]:
    """Registered patients by practice, sex and age band on ``on`` (as known on ``as_of``, default ``on``)."""
    as_of = as_of or on
    counts: Counter = Counter()
    for p in world.patients:
        v = _View(PatientRecord(patient=p), as_of)  # registration facts only
        if v.registered_on(on):
            counts[(p.ods_code, SEX_LABEL[p.sex], age_band(age_on(p.dob, on)))] += 1
    return [{"practice_code": k[0], "snapshot_date": on.isoformat(), "sex": k[1], "age_band": k[2], "patients": n}
            for k, n in sorted(counts.items())]


def write_all(tables: dict[str, list[dict]], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, rows in tables.items():
        path = folder / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            if rows:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        out.append(path)
    return out


def write_csv(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        if rows:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return path
