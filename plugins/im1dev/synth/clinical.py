"""Each patient's clinical record as supplier-neutral *facts*, generated deterministically.

``patient_record(world, patient)`` always returns the same facts for the same world and patient
(its random stream is seeded by the world seed and the patient key), so a large practice is
generated one patient at a time and nothing has to be held in memory.

Every fact carries the day it was *entered* into the practice system (dates are proleptic
ordinals for speed), and optionally later *changes* (``(entered, field, value)``) and a deletion
day. A delivery for data date D shows each fact as entered up to D; the ground truth reads the
same facts with the same rule.

Volumes follow the EMIS averages per patient (im1-formats.md 2.11) for ``years = 20`` and
``volume = 1.0``: about 135 consultations, 550 observations, 36 appointments, 42 medication
authorisations and 160 issues per patient.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from im1dev.synth import codes
from im1dev.synth.world import Patient, Rng, Staff, World, guid_from_bits

# -- rates (per patient-year at volume 1.0) ---------------------------------------------------
CONSULTATIONS_PER_YEAR = 6.75
APPOINTMENTS_PER_YEAR = 4.0
DIARY_PER_YEAR = 0.32
REFERRALS_PER_YEAR = 0.15
ACUTE_MEDS_PER_YEAR = 1.6

# condition prevalence by age band (upper age bound exclusive) - roughly England's QOF shapes
PREVALENCE = {
    "hyp": [(30, 0.005), (45, 0.04), (65, 0.18), (80, 0.45), (200, 0.60)],
    "dm": [(17, 0.002), (30, 0.005), (45, 0.03), (65, 0.09), (80, 0.17), (200, 0.18)],
    "ast": [(3, 0.0), (200, 0.07)],
    "copd": [(40, 0.0), (65, 0.02), (200, 0.07)],
    "chd": [(45, 0.002), (65, 0.03), (80, 0.10), (200, 0.16)],
    "af": [(45, 0.001), (65, 0.01), (80, 0.05), (200, 0.12)],
    "ckd": [(18, 0.0), (60, 0.01), (80, 0.08), (200, 0.20)],
    "dep": [(18, 0.005), (200, 0.12)],
}
MIN_AGE = {"hyp": 18, "dm": 5, "ast": 3, "copd": 40, "chd": 35, "af": 40, "ckd": 18, "dep": 12}
RESOLVE_P = {"hyp": 0.04, "dm": 0.01, "ast": 0.12, "copd": 0.02, "dep": 0.25, "ckd": 0.03, "chd": 0.0, "af": 0.03}
# blood pressure readings: which codes carry the pair (share of readings)
BP_KINDS = [("clinic", 0.72), ("oe", 0.15), ("home", 0.09), ("ambulatory", 0.02), ("other", 0.02)]
BP_PAIRS = {"clinic": ("271649006", "271650006"), "oe": ("163030003", "163031004"),
            "home": ("413606001", "413605002"), "ambulatory": ("314449000", "314462001")}
# QOF care codes per patient-year of a hypertensive (hyp) or diabetic (dm) patient: exclusions,
# personalised care adjustments and invitations (the rule chains' rejections)
QOF_CARE = {
    "hyp": [("htmax", 0.010), ("hyppcapu", 0.006), ("hyppcadec", 0.006), ("bpdec", 0.006), ("hypinvite", 0.12)],
    "dm": [("dmmax", 0.010), ("dmpcapu", 0.006), ("dminvite", 0.15), ("serfruc", 0.004)],
}

# appointments
LEAD_DAYS = [(0, 0, 0.35), (1, 1, 0.10), (2, 7, 0.25), (8, 14, 0.15), (15, 21, 0.07), (22, 28, 0.04), (29, 42, 0.04)]
OUTCOMES = [("attended", 0.85), ("dna", 0.05), ("cancelled_patient", 0.05), ("cancelled_practice", 0.03),
            ("booked", 0.02)]
# the six national appointment modes, the same for both suppliers: EMIS sends the mode itself,
# SystmOne the slot type's appointment method (tpp.APPOINTMENT_METHOD; no "Not an Appointment")
MODES = [("Face to Face (Surgery)", 0.62), ("Telephone/Audio", 0.28), ("Face to Face (Home Visit)", 0.02),
         ("Video with Audio", 0.02), ("Written (Including Online)", 0.02), ("Not an Appointment", 0.04)]
CATEGORIES = [("General Consultation Routine", "Routine", 0.55), ("General Consultation Acute", "Urgent", 0.30),
              ("Planned Clinics", "Clinic", 0.10), ("Unplanned Clinical Activity", "Urgent", 0.05)]

APPOINTMENT_HISTORY_YEARS = 5  # the appointment book reaches back at most this far


def works(clinician_key: int, day: int) -> bool:
    """Clinicians work four weekdays a week (a fixed day off); one session each morning and afternoon."""
    weekday = (day - 1) % 7  # date.fromordinal(day).weekday()
    return weekday < 5 and weekday != clinician_key % 5


def session_window(world: World) -> tuple[int, int]:
    """First and last day that appointment sessions exist for (sessions are set up 6 weeks ahead)."""
    start = world.start.toordinal()
    years = min(world.years, APPOINTMENT_HISTORY_YEARS)
    return start - int(years * 365.25), world.end.toordinal() + 42


@dataclass(slots=True)
class Event:
    """A coded clinical entry (EMIS CareRecord_Observation, TPP SRCode)."""

    id: int
    guid: str
    date: int
    entered: int
    code: str
    clinician: int  # staff key
    value: float | None = None
    unit: str = ""
    consultation: int | None = None
    parent: int | None = None  # e.g. systolic/diastolic children of a BP reading
    problem: bool = False
    tag: str = ""  # dx:<cond> | res:<cond> | bp_sys | bp_dia | bp | hba1c | frailty:<level> | smok:<cur|ex> |
    #                optout | optout_withdrawn | sensitive | referral | general
    confidential: bool = False
    episode: str = ""
    deleted: int | None = None
    changes: list | None = None  # [(entered, field, value)]
    org: str | None = None  # recorded by another organisation (TPP shared care)
    referral: dict | None = None
    entered_time: int = 0  # seconds after midnight


@dataclass(slots=True)
class Consultation:
    id: int
    guid: str
    date: int
    entered: int
    clinician: int
    ctype: str
    slot: int | None = None
    deleted: int | None = None
    org: str | None = None
    entered_time: int = 0


@dataclass(slots=True)
class Problem:
    event: int  # the diagnosis Event id (EMIS: same ObservationGuid)
    guid: str
    start: int
    entered: int
    end: int | None = None  # resolution date
    end_entered: int | None = None


@dataclass(slots=True)
class Authorisation:
    id: int
    guid: str
    drug: codes.Drug
    start: int
    entered: int
    clinician: int
    repeat: bool
    problem_event: int | None = None
    end: int | None = None  # cancelled/expired on
    end_entered: int | None = None
    issues: list = field(default_factory=list)  # issue dates (ordinals), for NumberOfIssues versions
    max_issues: int = 0


@dataclass(slots=True)
class Issue:
    id: int
    guid: str
    auth: int
    auth_guid: str
    drug: codes.Drug
    date: int
    entered: int
    clinician: int
    deleted: int | None = None
    quantity: float | None = None  # None: the drug's usual quantity (drug.quantity)
    private: bool = False  # a private prescription (not an NHS one); only EMIS can flag it

    @property
    def issued_quantity(self) -> float:
        return self.drug.quantity if self.quantity is None else self.quantity


# about one issue in PRIVATE_ONE_IN is a private prescription, at EMIS practices only (SystmOne's
# SRPrimaryCareMedication has no column to flag one). Chosen from the issue id, not the random
# stream, so the rest of every record stays as it was.
PRIVATE_ONE_IN = 97


@dataclass(slots=True)
class Appointment:
    id: int
    guid: str
    date: int
    start_min: int  # minutes after midnight
    duration: int
    clinician: int
    ampm: str
    booked: int
    booked_min: int
    outcome: str  # attended | dna | cancelled_patient | cancelled_practice | booked
    outcome_on: int  # day the outcome is recorded
    mode: str
    slot_type: str
    category: str
    context: str
    consultation: int | None = None


@dataclass(slots=True)
class DiaryEntry:
    id: int
    guid: str
    entered: int
    due: int
    code: str
    clinician: int
    done: int | None = None


@dataclass(slots=True)
class HistoryRow:
    date: int
    status: str
    entered: int


@dataclass
class PatientRecord:
    patient: Patient
    events: list[Event] = field(default_factory=list)
    consultations: list[Consultation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    authorisations: list[Authorisation] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    appointments: list[Appointment] = field(default_factory=list)
    diary: list[DiaryEntry] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)
    conditions: dict[str, int] = field(default_factory=dict)  # condition -> first diagnosis date
    private_scripts: bool = False  # the practice's system flags private prescriptions (EMIS)


def _poisson(rng: Rng, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _prevalence(cond: str, age: float) -> float:
    for upper, p in PREVALENCE[cond]:
        if age < upper:
            return p
    return 0.0


def _age_factor(age: float) -> float:
    if age < 5:
        return 1.0
    if age < 15:
        return 0.5
    if age < 45:
        return 0.8
    if age < 65:
        return 1.1
    if age < 80:
        return 1.6
    return 2.0


def _pick(rng: Rng, table: list[tuple]) -> tuple:
    r, acc = rng.random(), 0.0
    for row in table:
        acc += row[-1]
        if r < acc:
            return row
    return table[-1]


class _Ids:
    """Fact ids unique across the world: the patient key in the high digits."""

    def __init__(self, patient_key: int):
        self._next = patient_key * 1_000_000

    def __call__(self) -> int:
        self._next += 1
        return self._next


def patient_record(world: World, p: Patient, staff: list[Staff] | None = None) -> PatientRecord:
    """All facts of one patient's record, deterministic for (world.seed, patient.key)."""
    if p.case is not None:
        from im1dev.synth import casebook

        return casebook.case_record(world, p, staff if staff is not None else world.staff_of(p.ods_code))
    rng = Rng(f"{world.seed}:{p.key}")
    cat = codes.catalogue()
    ids = _Ids(p.key)
    rec = PatientRecord(patient=p)
    v = world.volume
    rec.private_scripts = world.practice(p.ods_code).supplier == "emis"
    clin = staff if staff is not None else world.staff_of(p.ods_code)
    gp_keys = [s.key for s in clin if s.role == "GP"] or [s.key for s in clin]
    nurse_keys = [s.key for s in clin if s.role != "GP"] or gp_keys
    supplier = world.practice(p.ods_code).supplier

    start = world.start.toordinal()
    end = world.end.toordinal()
    dob = p.dob.toordinal()
    reg = p.reg_date.toordinal()
    leave = p.dereg_date.toordinal() if p.dereg_date else None
    hist_start = max(dob, start - int(world.years * 365.25))
    active_end = min(end, leave - 1) if leave else end
    age_now = (start - dob) / 365.25

    def entered_for(day: int) -> int:
        # records older than the registration arrive with the patient (GP2GP); new ones the same day
        if day >= reg:
            return day
        return reg + (0 if reg <= start else rng.choice((0, 0, 1, 2, 3)))

    def etime() -> int:
        return rng.randint(8 * 3600, 18 * 3600)

    def clinician(nurse_share: float = 0.3) -> int:
        return rng.choice(nurse_keys) if rng.random() < nurse_share else rng.choice(gp_keys)

    def event(day: int, code: str, tag: str, **kw) -> Event:
        e = Event(id=ids(), guid=guid_from_bits(rng.getrandbits(128)), date=day, entered=entered_for(day),
                  code=code, clinician=kw.pop("clinician", None) or clinician(), tag=tag,
                  entered_time=etime(), **kw)
        rec.events.append(e)
        return e

    # ---- registration history (EMIS Admin_PatientHistory) ------------------------------------
    rec.history.append(HistoryRow(reg - rng.randint(1, 10), "Applied", min(reg, max(reg - 1, dob))))
    rec.history.append(HistoryRow(reg, "Registered", reg))
    for _ in range(rng.choice((1, 2, 2, 3))):
        day = rng.randint(min(reg, start), start)
        rec.history.append(HistoryRow(day, rng.choice(("Details Updated", "Address Changed", "Contact Details "
                                                                                            "Updated")), day))
    if p.death_date:
        rec.history.append(HistoryRow(leave, "Died", p.left_recorded.toordinal()))
    elif leave:
        rec.history.append(HistoryRow(leave, "Deducted", p.left_recorded.toordinal()))
    if active_end < hist_start:
        return rec

    # ---- long-term conditions ------------------------------------------------------------
    for cond in codes.CONDITIONS:
        if rng.random() >= _prevalence(cond, age_now):
            continue
        earliest = dob + int(MIN_AGE[cond] * 365.25)
        latest = min(active_end, start)
        if earliest > latest:
            continue
        dx_day = rng.randint(max(earliest, start - 25 * 365), latest)
        rec.conditions[cond] = dx_day
        dx = event(dx_day, rng.choice(cat.clusters[cond]), f"dx:{cond}", problem=True, episode="First")
        prob = Problem(event=dx.id, guid=dx.guid, start=dx_day, entered=dx.entered)
        rec.problems.append(prob)
        if rng.random() < RESOLVE_P[cond] and cond in cat.resolved:
            same_day = rng.random() < 0.05
            res_day = dx_day if same_day else dx_day + rng.randint(180, 6 * 365)
            if res_day <= active_end:
                res = event(res_day, cat.resolved[cond], f"res:{cond}")
                prob.end, prob.end_entered = res_day, res.entered
                if rng.random() < 0.15:  # diagnosed again after the resolution
                    again = res_day + rng.randint(90, 4 * 365)
                    if again <= active_end:
                        d2 = event(again, rng.choice(cat.clusters[cond]), f"dx:{cond}", problem=True,
                                   episode="New")
                        rec.problems.append(Problem(event=d2.id, guid=d2.guid, start=again, entered=d2.entered))
    # CKD down-staged to stage 1-2 (off the CKD register), sometimes staged 3-5 again later
    if "ckd" in rec.conditions and rng.random() < 0.06:
        down = rec.conditions["ckd"] + rng.randint(90, 5 * 365)
        if down <= active_end:
            event(down, rng.choice(cat.clusters["ckd12"]), "ckd:downstaged")
            if rng.random() < 0.3 and down + 200 <= active_end:
                event(rng.randint(down + 1, active_end), rng.choice(cat.clusters["ckd"]), "dx:ckd", episode="New")
    # depression is reviewed after the diagnosis: review codes are not new episodes
    if "dep" in rec.conditions:
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            day = rec.conditions["dep"] + rng.randint(10, 3 * 365)
            if day <= active_end:
                event(day, rng.choice(cat.clusters["dep"]), "dep:review", episode=rng.choice(("Review", "Review",
                                                                                             "Ended")))
    # a few new diagnoses during the timeline
    if end > start and rng.random() < 0.0005 * (end - start) * v * 10:
        cond = rng.choice([c for c in codes.CONDITIONS if c not in rec.conditions] or ["dep"])
        if age_now >= MIN_AGE[cond] and cond not in rec.conditions:
            day = rng.randint(start + 1, end)
            if day <= active_end:
                rec.conditions[cond] = day
                dx = event(day, rng.choice(cat.clusters[cond]), f"dx:{cond}", problem=True, episode="First")
                rec.problems.append(Problem(event=dx.id, guid=dx.guid, start=day, entered=dx.entered))
    n_cond = len(rec.conditions)
    factor = _age_factor(age_now) * (1 + 0.3 * n_cond) / 1.25 * v

    # ---- appointments ------------------------------------------------------------------------
    sess_first, sess_last = session_window(world)
    appt_from = max(sess_first, reg, hist_start)
    appt_to = min(sess_last - 14, active_end + 28)
    n_appt = _poisson(rng, APPOINTMENTS_PER_YEAR * factor * max(0, appt_to - appt_from) / 365.25)
    modes = MODES
    attended_days: list[tuple[int, Appointment]] = []
    for _ in range(n_appt):
        who = clinician(0.35)
        day = rng.randint(appt_from, appt_to)
        while not works(who, day):
            day += 1
        lo, hi, _w = _pick(rng, LEAD_DAYS)
        booked = max(appt_from, day - rng.randint(lo, hi))
        if booked > active_end or day > appt_to + 7:
            continue
        outcome = _pick(rng, OUTCOMES)[0]
        if outcome in ("attended", "dna", "booked"):
            outcome_on = day
        else:
            outcome_on = rng.randint(booked, day)
        ampm = rng.choice(("AM", "PM"))
        start_min = (8 * 60 + 30 if ampm == "AM" else 14 * 60) + 10 * rng.randint(0, 20)
        booked_min = start_min - 10 * rng.randint(1, 30) if booked == day else rng.randint(8 * 60, 18 * 60)
        cat_row = _pick(rng, CATEGORIES)
        a = Appointment(
            id=ids(), guid=guid_from_bits(rng.getrandbits(128)), date=day, start_min=start_min,
            duration=rng.choice((10, 10, 10, 15, 20)), clinician=who, ampm=ampm, booked=booked,
            booked_min=max(0, booked_min), outcome=outcome, outcome_on=outcome_on, mode=_pick(rng, modes)[0],
            slot_type=cat_row[1], category=cat_row[0],
            # SystmOne's IM1 extract carries no national category or context type: only EMIS slots can
            # be sent as administrative (a SystmOne practice's administrative slots cannot be told apart)
            context="Administrative" if supplier == "emis" and rng.random() < 0.03 else "Care Related Encounter",
        )
        rec.appointments.append(a)
        if outcome == "attended" and day <= active_end:
            attended_days.append((day, a))

    # ---- consultations and everyday observations --------------------------------------------
    n_cons = _poisson(rng, CONSULTATIONS_PER_YEAR * factor * (active_end - hist_start + 1) / 365.25)
    days = sorted(rng.randint(hist_start, active_end) for _ in range(max(0, n_cons - len(attended_days))))
    cons_days = [(d, None) for d in days] + attended_days
    general = cat.general
    cum = list(_cumulative(cat.general_weights))
    total_w = cum[-1]
    for day, appt in cons_days:
        who = appt.clinician if appt else clinician()
        c = Consultation(id=ids(), guid=guid_from_bits(rng.getrandbits(128)), date=day, entered=entered_for(day),
                         clinician=who, ctype=rng.choice(("Surgery consultation", "Telephone call",
                                                          "Administration note", "Clinical note")),
                         slot=appt.id if appt else None, entered_time=etime())
        rec.consultations.append(c)
        if appt:
            appt.consultation = c.id
        for _ in range(1 + int(-math.log(1.0 - rng.random()) * 3.4)):
            concept = general[bisect.bisect_right(cum, rng.random() * total_w)]
            val = None
            if concept.kind == "value":
                val = round(rng.uniform(concept.low, concept.high), 1)
                e = event(day, concept.code, "general", clinician=who, consultation=c.id, value=val,
                          unit=concept.unit)
            else:
                e = event(day, concept.code, "general", clinician=who, consultation=c.id)
                if rng.random() < 0.05:
                    # an acute problem, usually closed a few weeks later
                    e.problem = True
                    pr = Problem(event=e.id, guid=e.guid, start=day, entered=e.entered)
                    if rng.random() < 0.8:
                        pr.end = day + rng.randint(7, 90)
                        pr.end_entered = max(pr.end, e.entered)
                        if pr.end > active_end:
                            pr.end = pr.end_entered = None
                    rec.problems.append(pr)

    # ---- monitoring: blood pressure, HbA1c, frailty, smoking ---------------------------------
    adult_from = max(hist_start, dob + 18 * 365)
    if adult_from <= active_end:
        years_adult = (active_end - adult_from + 1) / 365.25
        hyp_like = any(c in rec.conditions for c in ("hyp", "dm", "ckd", "chd", "af"))
        n_bp = _poisson(rng, (2.0 if hyp_like else 0.6) * years_adult * v)
        base_sys = rng.gauss(138 if "hyp" in rec.conditions else 126, 10)
        other_sys = [c for c in cat.clusters["bp_sys"] if c not in cat.clusters["bp_home"]]
        other_dia = [c for c in cat.clusters["bp_dia"] if c not in cat.clusters["bp_home"]]
        for _ in range(n_bp):
            day = rng.randint(adult_from, active_end)
            for _reading in range(2 if rng.random() < 0.08 else 1):
                kind = _pick(rng, BP_KINDS)[0]
                # home and ambulatory averages run a little lower than clinic readings
                sys_v = int(min(220, max(85, rng.gauss(base_sys - (6 if kind in ("home", "ambulatory") else 0), 12))))
                dia_v = int(min(130, max(45, rng.gauss(sys_v * 0.6, 7))))
                who = clinician(0.6)
                sys_code, dia_code = BP_PAIRS.get(kind) or (rng.choice(other_sys), rng.choice(other_dia))
                parent = event(day, codes.BP_PARENT, "bp", clinician=who) if kind in ("clinic", "other") else None
                event(day, sys_code, "bp_sys", clinician=who, value=float(sys_v), unit="mmHg",
                      parent=parent.id if parent else None)
                event(day, dia_code, "bp_dia", clinician=who, value=float(dia_v), unit="mmHg",
                      parent=parent.id if parent else None)
        dm_day = rec.conditions.get("dm")
        n_a1c = _poisson(rng, (2.2 if dm_day else (0.25 if age_now > 40 else 0.02)) * years_adult * v)
        base_a1c = rng.gauss(60, 10) if dm_day else rng.gauss(37, 3)
        for _ in range(n_a1c):
            day = rng.randint(adult_from, active_end)
            val = int(min(140, max(25, rng.gauss(base_a1c, 8 if dm_day else 2))))
            event(day, codes.HBA1C if rng.random() < 0.9 else rng.choice(cat.clusters["hba1c"]), "hba1c",
                  value=float(val), unit="mmol/mol", clinician=clinician(0.7))
        if age_now >= 65 and rng.random() < 0.25:
            for _ in range(1 + (rng.random() < 0.3)):  # sometimes re-assessed later
                level = rng.choices(codes.FRAILTY_LEVELS, weights=[55, 33, 12])[0]
                event(rng.randint(adult_from, active_end), rng.choice(cat.clusters[f"frailty:{level}"]),
                      f"frailty:{level}")
        # QOF care codes: exclusions, personalised care adjustments, invitations (two, a week or more apart)
        for cond, care in QOF_CARE.items():
            if cond not in rec.conditions:
                continue
            since = max(adult_from, rec.conditions[cond])
            years = max(0.0, (active_end - since + 1) / 365.25)
            for what, rate in care:
                for _ in range(_poisson(rng, rate * years * v)):
                    day = rng.randint(since, active_end)
                    code = rng.choice(cat.clusters[what])
                    if what == "serfruc":
                        event(day, code, "qof:" + what, value=float(rng.randint(250, 400)), unit="umol/L")
                    else:
                        event(day, code, "qof:" + what)
                    if what.endswith("invite") and rng.random() < 0.6 and day + 7 <= active_end:
                        event(rng.randint(day + 7, min(active_end, day + 40)), code, "qof:" + what)
        smoker = rng.random()
        if smoker < 0.40:
            for _ in range(1 + _poisson(rng, years_adult / 3)):
                cur = smoker < 0.15 if rng.random() < 0.85 else smoker >= 0.15
                event(rng.randint(adult_from, active_end),
                      rng.choice(cat.clusters["lsmok" if cur else "exsmok"]), "smok:" + ("cur" if cur else "ex"))

    # ---- medicines: repeats for long-term conditions, acute courses --------------------------
    for cond, dx_day in rec.conditions.items():
        options = cat.drugs_for(cond)
        for drug in rng.sample(options, k=min(len(options), 1 + (rng.random() < 0.4))):
            _repeat_course(rng, rec, ids, drug, max(dx_day, hist_start), active_end, clinician, entered_for)
    if age_now > 30 and rng.random() < 0.35:
        drug = rng.choice(cat.drugs_for("general"))
        first = rng.randint(hist_start, max(hist_start, active_end))
        _repeat_course(rng, rec, ids, drug, first, active_end, clinician, entered_for)
    acute = cat.drugs_for("acute")
    for _ in range(_poisson(rng, ACUTE_MEDS_PER_YEAR * factor * (active_end - hist_start + 1) / 365.25)):
        day = rng.randint(hist_start, active_end)
        drug = rng.choice(acute)
        who = clinician(0.2)
        a = Authorisation(id=ids(), guid=guid_from_bits(rng.getrandbits(128)), drug=drug, start=day,
                          entered=entered_for(day), clinician=who, repeat=False, max_issues=1)
        a.end = day + drug.course_days
        a.end_entered = max(a.end, a.entered)
        rec.authorisations.append(a)
        _issue(rng, rec, ids, a, day, entered_for(day), who)

    # ---- diary, referrals, privacy-relevant codes -------------------------------------------
    for _ in range(_poisson(rng, DIARY_PER_YEAR * factor * (active_end - hist_start + 1) / 365.25)):
        day = rng.randint(hist_start, active_end)
        due = day + rng.choice((14, 28, 90, 180, 365))
        concept = rng.choice(general)
        rec.diary.append(DiaryEntry(id=ids(), guid=guid_from_bits(rng.getrandbits(128)), entered=entered_for(day),
                                    due=due, code=concept.code, clinician=clinician(),
                                    done=due if due <= active_end and rng.random() < 0.8 else None))
    if cat.referral is not None:
        for _ in range(_poisson(rng, REFERRALS_PER_YEAR * factor * (active_end - hist_start + 1) / 365.25)):
            day = rng.randint(hist_start, active_end)
            event(day, cat.referral.code, "referral", referral={
                "urgency": rng.choice(("Routine", "Urgent", "Two Week Wait")),
                "service": rng.choice(("Cardiology", "Dermatology", "Orthopaedics", "Gastroenterology",
                                       "Respiratory Medicine", "Mental Health")),
                "mode": rng.choice(("Electronic", "Letter")),
                "target": guid_from_bits(rng.getrandbits(128)),
                "ubrn": f"{rng.randint(10**11, 10**12 - 1)}",
            })
    if rng.random() < 0.01:
        event(rng.randint(hist_start, active_end), rng.choice(cat.clusters["sensitive"]), "sensitive",
              confidential=rng.random() < 0.5)
    if age_now >= 16 and rng.random() < 0.03:
        day = rng.randint(hist_start, active_end)
        event(day, codes.T1_DISSENT, "optout")
        if rng.random() < 0.2 and day < active_end:
            event(rng.randint(day + 1, active_end), codes.T1_DISSENT_WITHDRAWN, "optout_withdrawn")

    # ---- shared care (TPP): a community team records against the patient too -----------------
    if p.community_org:
        for _ in range(1 + _poisson(rng, 2 * v)):
            day = rng.randint(max(hist_start, reg), active_end)
            concept = rng.choice(general)
            event(day, concept.code, "general", org=p.community_org,
                  value=round(rng.uniform(concept.low, concept.high), 1) if concept.kind == "value" else None,
                  unit=concept.unit)

    # ---- edits and deletions made during the timeline ----------------------------------------
    for e in rec.events:
        if e.entered > start and e.tag == "general":
            r = rng.random()
            if r < 0.025:  # entered in error, removed within a few days
                e.deleted = min(end, e.entered + rng.choice((0, 1, 2, 3)))
            elif r < 0.075:
                # corrected the same day it was entered: the record travels twice in one delta
                if e.value is not None:
                    e.changes = [(e.entered, "value", round(e.value * 1.1, 1))]
                else:
                    e.changes = [(e.entered, "episode", "Review")]
    for c in rec.consultations:
        if c.entered > start and rng.random() < 0.005:
            c.deleted = min(end, c.entered + 1)
    return rec


def _cumulative(weights: list[float]):
    acc = 0.0
    for w in weights:
        acc += w
        yield acc


def _issue(rng: Rng, rec: PatientRecord, ids: _Ids, a: Authorisation, day: int, entered: int, who: int) -> Issue:
    i = Issue(id=ids(), guid=guid_from_bits(rng.getrandbits(128)), auth=a.id, auth_guid=a.guid, drug=a.drug,
              date=day, entered=entered, clinician=who)
    i.private = rec.private_scripts and i.id % PRIVATE_ONE_IN == 0
    rec.issues.append(i)
    a.issues.append(entered)
    return i


def _repeat_course(rng: Rng, rec: PatientRecord, ids: _Ids, drug: codes.Drug, first: int, active_end: int,
                   clinician, entered_for) -> None:
    """Yearly authorisations, each issued every course length until stopped or the timeline ends."""
    day = first
    stop = active_end if rng.random() < 0.85 else min(active_end, first + rng.randint(60, 3 * 365))
    while day <= stop:
        who = clinician(0.15)
        a = Authorisation(id=ids(), guid=guid_from_bits(rng.getrandbits(128)), drug=drug, start=day,
                          entered=entered_for(day), clinician=who, repeat=True, max_issues=13)
        rec.authorisations.append(a)
        until = min(stop, day + 364)
        issue_day = day
        while issue_day <= until and len(a.issues) < a.max_issues:
            _issue(rng, rec, ids, a, issue_day, entered_for(issue_day), who)
            issue_day += drug.course_days + rng.randint(-3, 7)
        if until < active_end or stop < active_end:
            a.end = until + 1
            a.end_entered = max(entered_for(until + 1), a.entered)
        day = until + 1
