"""Ground truth for the marts, computed straight from the simulated world's facts.

Never from the delivered files and never by dbt: this module reads :mod:`im1dev.synth.clinical`
facts with the same "as entered by the data date" rule a delivery uses, and applies the NHS
definitions written down independently of the SQL. Every mart built by dbt must equal these
numbers exactly for the same world and data date, and every case of the QOF casebook
(dbt_project/casebook) must come out as the casebook expects (tests/im1dev/synth/test_casebook_truth.py):
the truth follows the rule text, not the SQL.

Shared definitions
- Registered on date S: Regular (GMS) registration with start <= S and (no end or end > S), alive
  on S (no death or death > S), not a dummy/test patient. A registration end or death counts once
  the practice has recorded it (on or before the data date). SystmOne patients can hold more than
  one GMS registration at the practice (their history is sent): any one active counts, once.
- Age: completed years on the date. 5-year bands 0-4 ... 90-94, 95+, and single years 0 ... 94,
  95+ (PRGP metadata: AGE is "a single year ranging from 0 to 94. All ages from 95 onwards are
  grouped as 95+").
- Past list-size snapshots: a patient counts on S when a registration period the extract holds
  covers S, the same for both suppliers; what the extract holds differs (SystmOne sends every GMS
  registration at the practice, EMIS the record's current one), so :class:`_View` keeps a TPP
  patient's further registrations and not an EMIS one's.

Publication (NHS Digital disclosure control for HES and ECDS, September 2018; marts.md 5.4):
:func:`sdc_count` and :func:`sdc_rate` - below national level 0 stays 0, 1 to 7 is suppressed,
anything else is rounded to the nearest 5; a percentage is calculated from the rounded numerator
and the rounded denominator; a total is calculated from the unrounded values and then rounded.
- Shared-care rows (recorded by another organisation, TPP) are not the practice's and never count.
- A code belongs to every cluster whose code list holds it (seeds/codelists): some concepts are in
  two lists (AST_COD and COPD_COD share three, HYP_COD and CKD_COD three), and each register counts
  such an entry.

QOF (QOF business rules; casebook/sources.yml names each document and version)
- Reference dates (ACHV_DAT): 31 March of the latest QOF_YEARS QOF years on or before the data
  date, and every month-end of the current QOF year up to the data date. PPED is the 31 March that
  ends the reference date's QOF year, QSSD the 1 April that starts it; "in the n months up to
  PPED" is after PPED - n months and on or before ACHV_DAT (BR46-DM 3.1).
- Population: registered for GMS on ACHV_DAT; PAT_AGE in full years on it; REG_DAT the latest
  registration date on or before it.
- Registers: the latest diagnosis on or before ACHV_DAT (depression: first or new episodes only),
  not followed by a resolved (CKD: or stage 1-2) code dated strictly after it, aged at least the
  register's minimum; asthma also needs an ASTTRT_COD issue in the 12 months up to the date.
- HYP008/HYP009 and DM020/DM021: the rule chains of BR46-HYP rules 1-9 and BR46-DM rules 1-10.

GPAD (Appointments in General Practice; casebook/sources.yml GPAD-*, NHSE-RECORDING, SDS-JOBROLE)
- An appointment is a booked slot, counted in the month of its date once that date has passed
  (on or before the data date). Status: Attended or DNA once the outcome is recorded; still booked
  after the date: Unknown; cancelled: not counted (GPAD-SI).
- Only slots whose national category is a Care Related Encounter count (NHSE-RECORDING).
- Mode: the national mode -> GPAD's five published labels: Face to Face (Surgery) Face-to-Face,
  Face to Face (Home Visit) Home Visit, Telephone/Audio Telephone, Video with Audio and Written
  (Including Online) Video Conference/Online, Not an Appointment Unknown (GPAD-CSV-2025-05).
- HCP type from the clinician's national job role code: the GP roles are GP, the other practice
  roles Other Practice staff, anything else Unknown (SDS-JOBROLE; the GP set is unverified).
- Lead time: calendar days from booking to appointment, banded Same Day, 1 Day, 2 to 7 Days,
  8 to 14 Days, 15 to 21 Days, 22 to 28 Days, More than 28 Days; none or negative Unknown / Data
  Quality (GPAD-SI).

Prescribing (the English Prescribing Dataset's definitions; casebook/rx_prescribing.yml cites each)
- An item is a product on a prescription form (EPD ITEMS): one issue of the record is one item.
  Quantity is the issued quantities added up (EPD TOTAL_QUANTITY = quantity x items).
- NHS prescriptions only: a private prescription is not an item (NHSBSA's prescription data
  exclude private prescriptions).
- Counted in the calendar month of the issue date, on or before the data date.
- The product's name and BNF presentation come from the dm+d -> BNF mapping (seed dmd_bnf_map);
  the BNF chapter, section, paragraph and chemical substance are the first 2, 4, 6 and 9
  characters of the presentation code (NHSBSA). A product not in the mapping has no name and no
  BNF code, and is one bucket, 'unmapped', at every BNF level.
- Items per 1,000 patients: items x 1,000 / the list size on the first day of the month (the
  national list size is a snapshot as at the 1st), rounded half up to 2 decimals; none when that
  day's list size is not held (or is 0). Quantity is rolled up only at presentation level.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from im1dev.synth.clinical import PatientRecord, patient_record
from im1dev.synth.world import World

SEX_LABEL = {"M": "male", "F": "female", "I": "indeterminate", "U": "unknown"}
LIST_SIZE_MONTHS = 12  # list size on the first of this many months before the data date's month, and it

QOF_YEARS = 3  # achievement dates kept (dbt var qof_achievement_years)


@dataclass(frozen=True)
class Register:
    diagnosis: str
    resolved: str | None = None
    min_age: int = 0
    downstage: str | None = None
    treatment: str | None = None  # a drug cluster issued in the 12 months up to PPED
    since: dt.date | None = None  # the latest (first or new) diagnosis on or after this date
    first_or_new: bool = False


REGISTERS = {
    "DM017": Register("DM_COD", "DMRES_COD", 17),                                   # BR46-DM DM_REG rules 1-2
    "HYP001": Register("HYP_COD", "HYPRES_COD"),                                    # HYP_REG, no age limit
    "AST005": Register("AST_COD", "ASTRES_COD", 6, treatment="ASTTRT_COD"),          # asthma rules 1-3
    "COPD": Register("COPD_COD", "COPDRES_COD"),                                    # COPD015 rules 1-4
    "CHD001": Register("CHD_COD"),                                                  # no resolved cluster
    "AF001": Register("AFIB_COD", "AFIBRES_COD"),
    "CKD005": Register("CKD_COD", "CKDRES_COD", 18, downstage="CKD1AND2_COD"),
    "DEP003": Register("DEPR_COD", "DEPRES_COD", 18, since=dt.date(2006, 4, 1), first_or_new=True),
}
NOT_AN_EPISODE = {"review", "ended", "changed", "evolved", "flare up"}


@dataclass(frozen=True)
class Indicator:
    register: str
    ruleset: str
    min_age: int
    max_age: int | None
    frailty: str | None  # None (any), "moderate_or_severe" or "not_moderate_or_severe"
    target: tuple[float, float | None]
    home_target: tuple[float, float] | None = None


INDICATORS = {
    "HYP008": Indicator("HYP001", "HYP", 0, 79, None, (140, 90), (135, 85)),
    "HYP009": Indicator("HYP001", "HYP", 80, None, None, (150, 90), (145, 85)),
    "DM020": Indicator("DM017", "DM", 0, None, "not_moderate_or_severe", (58, None)),
    "DM021": Indicator("DM017", "DM", 0, None, "moderate_or_severe", (75, None)),
}
# rejection rules in chain order: (rule, reason, cluster) - BR46-HYP rules 3-6, BR46-DM rules 4-7
HYP_REJECT = ((3, "max_tolerated_treatment", "HTMAX_COD"), (4, "unsuitable", "HYPPCAPU_COD"),
              (5, "bp_declined", "BPDEC_COD"), (6, "care_declined", "HYPPCADEC_COD"))
DM_REJECT = ((4, "max_tolerated_treatment", "DMMAX_COD"), (5, "unsuitable", "DMPCAPU_COD"),
             (6, "blood_test_declined", "BLDTESTDEC_COD"), (7, "care_declined", "DMPCADEC_COD"))
# GPAD HCP type by national job role code (SDS-JOBROLE). GPAD's GP set is not stated in any source
# read: GP, salaried GP, GP registrar and sessional GP are ours.
GPAD_GP_ROLES = frozenset({"R0260", "R0270", "R6200", "R6300"})
GPAD_OTHER_PRACTICE_ROLES = frozenset({
    "R0570", "R0600", "R0610", "R0620", "R0630", "R0690", "R0700", "R1543",  # nurses
    "R1290", "R1070", "R1110", "R1550",  # pharmacist, paramedic, physiotherapist, counsellor
    "R1450", "R1480", "R1590",  # health care support worker, healthcare assistant, phlebotomist
    "R1720", "R1730", "R1760", "R1780",  # clerical worker, receptionist, medical secretary, manager
})


def gpad_hcp_type(role_code: str | None) -> str:
    if role_code in GPAD_GP_ROLES:
        return "GP"
    return "Other Practice staff" if role_code in GPAD_OTHER_PRACTICE_ROLES else "Unknown"


GPAD_MODE = {
    "Face to Face (Surgery)": "Face-to-Face",
    "Face to Face (Home Visit)": "Home Visit",
    "Telephone/Audio": "Telephone",
    "Video with Audio": "Video Conference/Online",
    "Written (Including Online)": "Video Conference/Online",
    "Not an Appointment": "Unknown",
}


def gpad_cell(a, role_code: str | None, as_of: int) -> tuple[str, str, str, str] | None:
    """GPAD's (status, mode, HCP type, lead-time band) of appointment ``a`` (clinical.Appointment)
    whose clinician holds national job role ``role_code``, as known on day ``as_of`` (an ordinal);
    None when GPAD does not count it (not yet held, cancelled, not a Care Related Encounter)."""
    if a.booked > as_of or a.date > as_of or a.context != "Care Related Encounter":
        return None
    known = a.outcome_on <= as_of and a.outcome != "booked"
    status = {"attended": "Attended", "dna": "DNA"}.get(a.outcome) if known else "Unknown"
    if status is None:
        return None  # cancelled: not an appointment for GPAD
    return status, GPAD_MODE[a.mode], gpad_hcp_type(role_code), lead_time_band(a.date - a.booked)


def age_on(dob: dt.date, on: dt.date) -> int:
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def age_band(age: int) -> str:
    if age >= 95:
        return "95+"
    lo = (age // 5) * 5
    return f"{lo}-{lo + 4}"


def age_single(age: int) -> str:
    """PRGP's single year of age: '0' ... '94', '95+'."""
    return "95+" if age >= 95 else str(age)


def sdc_count(n: int | None) -> int | None:
    """A count as published below national level: 0 -> 0, 1-7 -> None (suppressed), else the
    nearest multiple of 5 (an integer count is never exactly half-way)."""
    if n is None:
        return None
    if n == 0:
        return 0
    if 1 <= n <= 7:
        return None
    return 5 * ((2 * n + 5) // 10)


def sdc_rate(numerator: int, denominator: int, digits: int = 1) -> Decimal | None:
    """A percentage as published: from the rounded numerator and the rounded denominator (each
    the exact count put through :func:`sdc_count`); None when either is suppressed or the
    denominator is 0. Rounded half away from zero to ``digits`` decimals."""
    num, den = sdc_count(numerator), sdc_count(denominator)
    if num is None or den is None or den == 0:
        return None
    return (Decimal(100 * num) / Decimal(den)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


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

    def __init__(self, rec: PatientRecord, as_of: dt.date, supplier: str = "emis"):
        self.rec = rec
        self.p = rec.patient
        d = as_of.toordinal()
        self.d = d
        known_left = self.p.left_known(as_of)
        self.end = self.p.dereg_date if known_left else None
        self.death = self.p.death_date if known_left else None
        self.visible = self.p.reg_date <= as_of
        # SystmOne sends the registration history: further GMS registrations at the practice
        self.extra = list(self.p.extra_registrations or ()) if supplier == "tpp" else []
        self.events = [e for e in rec.events
                       if e.entered <= d and (e.deleted is None or e.deleted > d) and e.org is None]
        self.issues = [i for i in rec.issues if i.entered <= d and (i.deleted is None or i.deleted > d)]

    def _alive_real(self, s: dt.date) -> bool:
        p = self.p
        return self.visible and not p.dummy and p.dob <= s and (self.death is None or self.death > s)

    def registered_on(self, s: dt.date) -> bool:
        return self.registration_date(s) is not None

    def registration_date(self, s: dt.date) -> dt.date | None:
        """REG_DAT on ``s``: the latest start of a GMS registration active on ``s`` (None: not registered)."""
        if not self._alive_real(s):
            return None
        p = self.p
        starts = []
        if p.reg_type == "Regular" and p.reg_date <= s and (self.end is None or self.end > s):
            starts.append(p.reg_date)
        starts += [start for start, end in self.extra if start <= s and (end is None or end > s)]
        return max(starts) if starts else None

    def value(self, e) -> float | None:
        v = e.value
        for when, fld, val in e.changes or ():
            if when <= self.d and fld == "value":
                v = val
        return v

    def episode(self, e) -> str:
        ep = e.episode
        for when, fld, val in e.changes or ():
            if when <= self.d and fld == "episode":
                ep = val
        return ep or ""


@dataclass(frozen=True)
class Entry:
    """A dated entry of a QOF cluster: a coded observation or a drug issue."""

    day: int
    clusters: frozenset
    value: float | None = None
    episode: str = ""
    id: int = 0


def cluster_entries(v: _View) -> list[Entry]:
    """The patient's entries with the clusters their codes belong to (from the code lists)."""
    from im1dev.synth.casebook import clusters_of_code

    of = clusters_of_code()
    out = []
    for e in v.events:
        cl = of.get(e.code) if e.code is not None else frozenset([e.tag[len("cluster:"):]])
        if cl:
            out.append(Entry(e.date, cl, v.value(e), v.episode(e), e.id))
    for i in v.issues:
        cl = of.get(i.drug.dmd)
        if cl:
            out.append(Entry(i.date, cl, None, "", i.id))
    return out


@dataclass(frozen=True)
class QofDate:
    """A QOF reference date (ACHV_DAT) with its QOF year's qualifying dates."""

    achv: dt.date
    kind: str  # achievement | month_end

    @property
    def pped(self) -> dt.date:
        return dt.date(self.achv.year if self.achv.month <= 3 else self.achv.year + 1, 3, 31)

    @property
    def qssd(self) -> dt.date:
        return dt.date(self.pped.year - 1, 4, 1)

    @property
    def qof_year(self) -> str:
        return f"{self.pped.year - 1}-{str(self.pped.year)[2:]}"

    def after(self, months: int) -> int:
        """The ordinal of PPED - ``months`` months: "in the n months up to PPED" is after it."""
        return months_before(self.pped, months).toordinal()


def qof_dates(as_of: dt.date, years: int = QOF_YEARS) -> list[QofDate]:
    """31 March of the latest ``years`` QOF years, and the month-ends of the current QOF year, up to ``as_of``."""
    latest = as_of.year if as_of >= dt.date(as_of.year, 3, 31) else as_of.year - 1
    out = [QofDate(dt.date(latest - k, 3, 31), "achievement") for k in range(years)]
    for k in range(1, 12):
        first_of_next = dt.date(latest + (3 + k) // 12, (3 + k) % 12 + 1, 1)
        end = first_of_next - dt.timedelta(days=1)
        if end <= as_of:
            out.append(QofDate(end, "month_end"))
    return sorted(out, key=lambda q: q.achv)


def qof_registers(entries: list[Entry], q: QofDate, age: int) -> dict[str, tuple[bool, str]]:
    """Each register the patient has a diagnosis for on ``q``: (on the register, status)."""
    out = {}
    r = q.achv.toordinal()
    upto = [e for e in entries if e.day <= r]
    for reg, rule in REGISTERS.items():
        dx = [e for e in upto if rule.diagnosis in e.clusters]
        if not dx:
            continue
        qualifying = [e.day for e in dx
                      if not rule.first_or_new or e.episode.strip().lower() not in NOT_AN_EPISODE]
        if not qualifying:
            out[reg] = (False, "no_first_or_new_episode")
            continue
        latest = max(qualifying)

        def after_latest(cluster: str | None, latest: int = latest) -> bool:
            return cluster is not None and any(cluster in e.clusters and e.day > latest for e in upto)

        if rule.since is not None and latest < rule.since.toordinal():
            status = "before_2006"
        elif rule.treatment and not any(rule.treatment in e.clusters and e.day > months_before(q.achv, 12).toordinal()
                                        for e in upto):
            status = "no_treatment"
        elif after_latest(rule.downstage):
            status = "downstaged"
        elif after_latest(rule.resolved):
            status = "resolved"
        elif age < rule.min_age:
            status = "under_age"
        else:
            status = "on_register"
        out[reg] = (status == "on_register", status)
    return out


def _in_window(entries: list[Entry], q: QofDate, cluster: str) -> list[Entry]:
    r, lo = q.achv.toordinal(), q.after(12)
    return [e for e in entries if cluster in e.clusters and lo < e.day <= r]


def _latest_bp(entries: list[Entry], q: QofDate) -> dict | None:
    """The latest day in the 12 months up to PPED with a systolic and a diastolic value: the lowest
    of each, per setting (home or ambulatory codes vs the rest)."""
    days: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    r, lo = q.achv.toordinal(), q.after(12)
    for e in entries:
        if not (lo < e.day <= r) or e.value is None:
            continue
        home = "HOMEAMBBP" in e.clusters
        for part in ("BP_SYS", "BP_DIA"):
            if part in e.clusters:
                days[e.day][(part, home)].append(e.value)
    full = [d for d, vals in days.items()
            if (vals[("BP_SYS", False)] or vals[("BP_SYS", True)]) and (vals[("BP_DIA", False)] or vals[("BP_DIA", True)])]
    if not full:
        return None
    d = max(full)
    vals = days[d]

    def low(part, home):
        return min(vals[(part, home)]) if vals[(part, home)] else None

    return {"day": d, "clinic": (low("BP_SYS", False), low("BP_DIA", False)),
            "home": (low("BP_SYS", True), low("BP_DIA", True)),
            "any": (min(vals[("BP_SYS", False)] + vals[("BP_SYS", True)]),
                    min(vals[("BP_DIA", False)] + vals[("BP_DIA", True)]))}


def _bp_met(bp: dict, ind: Indicator) -> bool:
    def ok(pair, target):
        return pair[0] is not None and pair[1] is not None and pair[0] <= target[0] and pair[1] <= target[1]

    if ok(bp["clinic"], ind.target) or ok(bp["home"], ind.home_target):
        return True
    complete = [p for p in (bp["clinic"], bp["home"]) if p[0] is not None and p[1] is not None]
    return not complete and ok(bp["any"], ind.target)


def _invites(entries: list[Entry], q: QofDate, cluster: str) -> tuple[int | None, int | None]:
    days = sorted(e.day for e in entries if cluster in e.clusters and q.qssd.toordinal() <= e.day <= q.achv.toordinal())
    if not days:
        return None, None
    second = next((d for d in days if d >= days[0] + 7), None)
    return days[0], second


def qof_indicators(entries: list[Entry], q: QofDate, age: int, reg_date: dt.date,
                   registers: dict[str, tuple[bool, str]]) -> dict[str, tuple[str, str]]:
    """The indicator of each register the patient is on: (numerator | denominator | excluded, reason)."""
    out = {}
    r = q.achv.toordinal()
    for name, ind in INDICATORS.items():
        if not registers.get(ind.register, (False,))[0]:
            continue
        if age < ind.min_age or (ind.max_age is not None and age > ind.max_age):
            continue  # rule 1 (HYP): the other age group
        reg = REGISTERS[ind.register]
        first_dx = min(e.day for e in entries if reg.diagnosis in e.clusters and e.day <= r)
        if ind.ruleset == "DM":
            frail = [e for e in entries if e.day <= r and e.clusters & {"MILDFRAIL_COD", "MODFRAIL_COD", "SEVFRAIL_COD"}]
            last = max((e.day for e in frail), default=None)
            mod_sev = last is not None and any(
                e.day == last and e.clusters & {"MODFRAIL_COD", "SEVFRAIL_COD"} for e in frail)
            if (ind.frailty == "moderate_or_severe") != mod_sev:
                continue  # rule 1 (DM): the other frailty group
            results = _in_window(entries, q, "IFCCHBAM_COD")
            reading_day = max((e.day for e in results), default=None)
            values = [e.value for e in results if e.day == reading_day and e.value is not None]
            met = bool(values) and min(values) <= ind.target[0]
            reading_value_known = bool(values)
            rejects = [(reason, bool(_in_window(entries, q, cluster))) for _r, reason, cluster in DM_REJECT]
            if reading_day is None and _in_window(entries, q, "SERFRUC_COD"):
                rejects.insert(0, ("fructosamine", True))
            invite_cluster = "DMINVITE_COD"
        else:
            bp = _latest_bp(entries, q)
            reading_day = bp["day"] if bp else None
            met = bp is not None and _bp_met(bp, ind)
            reading_value_known = bp is not None
            rejects = [(reason, bool(_in_window(entries, q, cluster))) for _r, reason, cluster in HYP_REJECT]
            invite_cluster = "HYPINVITE_COD"
        if met:
            out[name] = ("numerator", "target_met")
            continue
        reason = next((why for why, hit in rejects if hit), None)
        if reason is None:
            first, second = _invites(entries, q, invite_cluster)
            # after a reading above target (one with a value: a valueless one is neither above
            # target nor missing, BR46-DM rule 8), or with no reading in the 12 months
            if second is not None and (reading_day is None or (reading_value_known and first > reading_day)):
                reason = "invitations"
        if reason is None and first_dx > q.after(9):
            reason = "recent_diagnosis"
        if reason is None and reg_date.toordinal() > q.after(9):
            reason = "recent_registration"
        out[name] = ("excluded", reason) if reason else ("denominator", "target_not_met")
    return out


def qof_patient(v: _View, q: QofDate) -> dict | None:
    """Everything QOF says of one patient on ``q``: None when not in the population."""
    reg_date = v.registration_date(q.achv)
    if reg_date is None:
        return None
    age = age_on(v.p.dob, q.achv)
    entries = cluster_entries(v)
    registers = qof_registers(entries, q, age)
    return {"age": age, "registration_date": reg_date, "registers": registers,
            "indicators": qof_indicators(entries, q, age, reg_date, registers)}


def compute(world: World, as_of: dt.date, records=None) -> dict[str, list[dict]]:
    """Every truth table for data date ``as_of``.

    ``records`` (patient -> PatientRecord) replaces the generated facts, e.g. with a hand-built
    population in tests.
    """
    list_counts: Counter = Counter()
    single_counts: Counter = Counter()
    reg_counts: Counter = Counter()
    denoms: Counter = Counter()
    ind_counts: Counter = Counter()
    appts: Counter = Counter()
    rx: dict = {}
    staff = {s.key: s for s in world.staff}
    dates = snapshot_dates(as_of)
    qdates = qof_dates(as_of)
    supplier_of = {p.ods_code: p.supplier for p in world.practices}
    staff_by_ods = {p.ods_code: world.staff_of(p.ods_code) for p in world.practices if p.activated}
    for p in (world.patients if records else world.delivered_patients()):
        rec = records(p) if records else patient_record(world, p, staff_by_ods[p.ods_code])
        v = _View(rec, as_of, supplier_of[p.ods_code])
        if not v.visible:
            continue
        ods, sex = p.ods_code, SEX_LABEL[p.sex]
        for s in dates:
            if v.registered_on(s):
                list_counts[(ods, s, sex, age_band(age_on(p.dob, s)))] += 1
                single_counts[(ods, s, sex, age_single(age_on(p.dob, s)))] += 1
        # -- appointments (GPAD) and prescribing: everything the practice recorded -----------
        for a in rec.appointments:
            cell = gpad_cell(a, staff[a.clinician].job_category_code, v.d)
            if cell is not None:
                appts[(ods, dt.date.fromordinal(a.date).replace(day=1), *cell)] += 1
        rx_items(v, rx, ods)
        # -- QOF registers and indicators on every QOF reference date --------------------------
        for q in qdates:
            got = qof_patient(v, q)
            if got is None:
                continue
            for reg, rule in REGISTERS.items():
                denoms[(ods, q, reg, "all")] += 1
                if got["age"] >= rule.min_age:
                    denoms[(ods, q, reg, "age")] += 1
            for reg, (on, _why) in got["registers"].items():
                reg_counts[(ods, q, reg)] += on
            for ind, (status, _why) in got["indicators"].items():
                ind_counts[(ods, q, ind, "eligible")] += 1
                ind_counts[(ods, q, ind, "numerator")] += status == "numerator"
                ind_counts[(ods, q, ind, "denominator")] += status != "excluded"
                ind_counts[(ods, q, ind, "pca_count")] += status == "excluded"
    out = _tables(world, as_of, qdates, list_counts, reg_counts, denoms, ind_counts, appts, rx)
    out["list_size_single_age"] = [
        {"practice_code": k[0], "snapshot_date": k[1].isoformat(), "sex": k[2], "age": k[3], "patients": n}
        for k, n in sorted(single_counts.items())
    ]
    return out


def _tables(world, as_of, qdates, list_counts, reg_counts, denoms, ind_counts, appts, rx) -> dict[str, list[dict]]:
    practices = [p.ods_code for p in world.practices if p.activated]
    out: dict[str, list[dict]] = {}
    out["list_size"] = [
        {"practice_code": k[0], "snapshot_date": k[1].isoformat(), "sex": k[2], "age_band": k[3], "patients": n}
        for k, n in sorted(list_counts.items())
    ]
    out["qof_registers"] = [
        {"practice_code": ods, "reference_date": q.achv.isoformat(), "reference_kind": q.kind,
         "qof_year": q.qof_year, "register": reg, "register_count": reg_counts[(ods, q, reg)],
         "list_size_all_ages": denoms[(ods, q, reg, "all")], "list_size_age_group": denoms[(ods, q, reg, "age")]}
        for ods in practices for q in qdates for reg in REGISTERS
    ]
    out["qof_indicators"] = [
        {"practice_code": ods, "reference_date": q.achv.isoformat(), "reference_kind": q.kind,
         "qof_year": q.qof_year, "indicator": ind,
         **{c: ind_counts[(ods, q, ind, c)] for c in ("eligible", "numerator", "denominator", "pca_count")}}
        for ods in practices for q in qdates for ind in INDICATORS
    ]
    out["appointments"] = [
        {"practice_code": k[0], "appointment_month": k[1].isoformat(), "gpad_status": k[2], "gpad_mode": k[3],
         "hcp_type": k[4], "lead_time_band": k[5], "appointments": n}
        for k, n in sorted(appts.items())
    ]
    lists: Counter = Counter()
    for (ods, day, _sex, _band), n in list_counts.items():
        lists[(ods, day)] += n
    out.update(prescribing(rx, lists))
    return out


# -- prescribing ------------------------------------------------------------------------------------

BNF_LEVELS = (("chapter", 2), ("section", 4), ("paragraph", 6), ("chemical", 9), ("presentation", 15))
UNMAPPED = "unmapped"
UNMAPPED_NAME = "Unmapped: no BNF code for the dm+d product"


@functools.cache
def dmd_bnf_map() -> dict[str, dict]:
    """The dm+d -> BNF mapping (reference data: dbt seed prescribing/dmd_bnf_map), by dm+d code."""
    from im1 import paths

    with open(paths.dbt_project_dir() / "seeds" / "prescribing" / "dmd_bnf_map.csv", newline="", encoding="utf-8") as fh:
        return {r["dmd_code"]: r for r in csv.DictReader(fh)}


def rx_items(v: _View, rx: dict, ods: str) -> None:
    """Add a patient's NHS items to ``rx``: (practice, month, dm+d code) -> [items, quantity]."""
    for i in v.issues:
        if i.date > v.d or i.private:
            continue
        key = (ods, dt.date.fromordinal(i.date).replace(day=1), i.drug.dmd)
        items, qty = rx.get(key, (0, 0))
        rx[key] = (items + 1, qty + i.issued_quantity)


def per_1000(items: int, list_size: int | None) -> Decimal | None:
    if not list_size:
        return None
    return (Decimal(1000 * items) / Decimal(list_size)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def prescribing(rx: dict, lists: dict) -> dict[str, list[dict]]:
    """The prescribing tables from the items per practice, month and product and the list sizes
    per practice and first of the month."""
    bnf = dmd_bnf_map()
    products, levels = [], defaultdict(lambda: [0, 0, None])
    for (ods, month, dmd), (items, qty) in sorted(rx.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        m = bnf.get(dmd)
        code = m["bnf_presentation_code"] if m else None
        size = lists.get((ods, month)) or None
        products.append({
            "practice_code": ods, "issue_month": month.isoformat(), "dmd_code": dmd,
            "drug": m["dmd_name"] if m else None, "is_mapped": m is not None,
            **{f"bnf_{level}_code": code[:n] if code else None for level, n in BNF_LEVELS},
            "items": items, "quantity": qty, "list_size": size, "items_per_1000": per_1000(items, size)})
        for level, n in BNF_LEVELS:
            at = code[:n] if code else UNMAPPED
            name = (m[f"bnf_{level}_name"] if m else UNMAPPED_NAME)
            cell = levels[(ods, month, level, at)]
            cell[0] += items
            cell[1] += qty
            cell[2] = (name, size)
    return {
        "prescribing": products,
        "prescribing_bnf": [
            {"practice_code": ods, "issue_month": month.isoformat(), "bnf_level": level, "bnf_code": code,
             "bnf_name": name, "items": items,
             "quantity": qty if level == "presentation" and code != UNMAPPED else None,
             "list_size": size, "items_per_1000": per_1000(items, size)}
            for (ods, month, level, code), (items, qty, (name, size)) in sorted(levels.items())],
    }


def patient_prescribing(v: _View, ods: str, as_of: dt.date) -> dict[str, list[dict]]:
    """The prescribing tables of a practice whose only patient is ``v`` (a casebook case): its
    list size on the first of a month is 1 when it is registered that day."""
    rx: dict = {}
    rx_items(v, rx, ods)
    lists = {(ods, s): 1 for s in snapshot_dates(as_of) if v.registered_on(s)}
    return prescribing(rx, lists)


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
