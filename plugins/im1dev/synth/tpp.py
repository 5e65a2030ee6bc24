"""TPP SystmOne (SR extract) deliveries from the simulated world.

A batch is a folder named ``yyyyMMdd_HHmm`` in the gateway folder holding ``SR<Name>.csv``
files in Windows-1252 (every field quoted, CRLF), dates as ``dd MMM yyyy HH:mm:ss``, deletions
in-row (``RemovedData = 1``, keys only), and ``SRManifest.csv`` with its five columns, written
last. Rows are keyed on (IDOrganisationVisibleTo, RowIdentifier); coded values such as the
appointment status and the episode type are ids resolved through ``SRMapping``.

Shared care: a patient also on a community service's list has rows recorded by that service
(``IDOrganisation`` and ``IDOrganisationRegisteredAt`` = the service); the practice is not the
data controller for them and the warehouse must drop them.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from im1 import specs
from im1dev.synth import codes
from im1dev.synth.clinical import PatientRecord, patient_record, session_window, works
from im1dev.synth.world import World

ENCODING = "cp1252"
TRUE, FALSE = "true", "false"
FILES = ("SRPatient", "SRPatientRegistration", "SRCode", "SREvent", "SRProblem", "SRAppointment",
         "SRAppointmentFlags", "SRRota",
         "SRRepeatTemplate", "SRPrimaryCareMedication", "SRStaffMember", "SRStaffMemberProfile", "SROrganisation")
ALWAYS_EMPTY = ("SRAppointmentAttendees",)  # listed in the manifest without dates (as TPP does)
UNLISTED = ("SRMapping",)  # present in the folder, never listed in the manifest

APPOINTMENT_STATUS = {  # SRMapping ids (group 1: appointment status)
    "booked": (1001, "Booked"),
    "attended": (1002, "Finished"),
    "dna": (1003, "Did Not Attend"),
    "cancelled_patient": (1004, "Cancelled by Patient"),
    "cancelled_practice": (1005, "Cancelled by Unit"),
}
EPISODE_TYPE = {  # SRMapping ids (group 2: episode type); SRCode.EpisodeType carries the id
    "First": (2001, "First"),
    "New": (2002, "New"),
    "Review": (2003, "Review"),
    "Ended": (2004, "Ended"),
}
STAFF_PROFILE_OFFSET = 500_000
# SystmOne's appointment methods (the slot type's mode; a subset of the appointment flags) for each
# national mode; SystmOne has no "Not an Appointment" (NHS Digital SystmOne data-quality guidance,
# mode of appointment: casebook/sources.yml GPAD-DQ-S1-MODE)
APPOINTMENT_METHOD = {
    "Face to Face (Surgery)": "Face to Face",
    "Face to Face (Home Visit)": "Home Visit",
    "Written (Including Online)": "Written/Online",
    "Telephone/Audio": "Telephone",
    "Video with Audio": "Video Consultation",
}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATES: dict[int, str] = {}



def free_text_name(drug: codes.Drug) -> str:
    """The medication name as a SystmOne user's free text shows it: not the dm+d name (here upper
    case with the pack, e.g. 'RAMIPRIL 5MG CAPSULES x28'), so a mart that names a drug from
    the supplier's text instead of the dm+d -> BNF mapping shows it."""
    return f"{drug.name.upper()} x{codes.quantity_text(drug.quantity)}"

def tdate(day: int | None, seconds: int = 0, *, with_seconds: bool = True) -> str:
    """``dd MMM yyyy HH:mm:ss`` (TPP)."""
    if day is None:
        return ""
    base = _DATES.get(day)
    if base is None:
        d = dt.date.fromordinal(day)
        base = _DATES[day] = f"{d.day:02d} {_MONTHS[d.month - 1]} {d.year}"
    hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{base} {hh:02d}:{mm:02d}:{ss:02d}" if with_seconds else f"{base} {hh:02d}:{mm:02d}"


def columns(name: str) -> list[str]:
    return list(specs.tpp_files()[name].columns)


COLS = {n: columns(n) for n in (*FILES, *ALWAYS_EMPTY, *UNLISTED)}


def _row(name: str, **values) -> tuple:
    return tuple("" if values.get(c) is None else str(values.get(c, "")) for c in COLS[name])


def removed_row(name: str, row: tuple) -> tuple:
    """What TPP sends for a removed record: the keys and RemovedData = 1, nothing else."""
    cols = COLS[name]
    keep = {"RowIdentifier", "IDOrganisationVisibleTo"}
    return tuple("1" if c == "RemovedData" else (row[i] if c in keep else "") for i, c in enumerate(cols))


class TppView:
    def __init__(self, world: World):
        self.world = world
        self.cat = codes.catalogue()

    def patient_tables(self, rec: PatientRecord, as_of: int) -> dict[str, dict]:
        p = rec.patient
        out: dict[str, dict] = {n: {} for n in ("SRPatient", "SRPatientRegistration", "SRCode", "SREvent", "SRProblem",
                                                "SRAppointment", "SRAppointmentFlags", "SRRepeatTemplate",
                                                "SRPrimaryCareMedication")}
        if p.reg_date.toordinal() > as_of:
            return out
        ods = p.ods_code
        known_left = p.left_known(as_of)
        out["SRPatient"][p.key] = _row(
            "SRPatient", RowIdentifier=p.key, IDOrganisationVisibleTo=ods, Title=p.title, FirstName=p.given,
            MiddleNames=p.middle, Surname=p.surname, NHSNumber=p.nhs_number,
            DateBirth=tdate(p.dob.toordinal(), with_seconds=False),
            DateDeath=tdate(p.death_date.toordinal(), with_seconds=False) if (p.death_date and known_left) else "",
            Gender=p.sex, TestPatient=TRUE if p.dummy else FALSE, SpineMatched=TRUE, RemovedData="0")
        status = "GMS" if p.reg_type == "Regular" else "Temporary"
        if status == "GMS" and p.key % 17 == 0:
            status = "GMS,Contraception"
        out["SRPatientRegistration"][p.key * 10] = _row(
            "SRPatientRegistration", RowIdentifier=p.key * 10, IDOrganisationVisibleTo=ods,
            DateEventRecorded=tdate(p.reg_date.toordinal(), 9 * 3600), DateRegistration=tdate(p.reg_date.toordinal()),
            DateDeRegistration=tdate(p.dereg_date.toordinal()) if (p.dereg_date and known_left) else "",
            RegistrationStatus=status, IDPatient=p.key, IDOrganisation=ods, IDOrganisationRegisteredAt=ods,
            RemovedData="0")
        for i, (start, end) in enumerate(p.extra_registrations or ()):
            # a further GMS registration at the practice (SystmOne sends the history; they can overlap)
            ended = end is not None and end.toordinal() <= as_of
            out["SRPatientRegistration"][p.key * 10 + 2 + i] = _row(
                "SRPatientRegistration", RowIdentifier=p.key * 10 + 2 + i, IDOrganisationVisibleTo=ods,
                DateEventRecorded=tdate(start.toordinal(), 9 * 3600), DateRegistration=tdate(start.toordinal()),
                DateDeRegistration=tdate(end.toordinal()) if ended else "", RegistrationStatus="GMS",
                IDPatient=p.key, IDOrganisation=ods, IDOrganisationRegisteredAt=ods, RemovedData="0")
        if p.community_org:
            out["SRPatientRegistration"][p.key * 10 + 1] = _row(
                "SRPatientRegistration", RowIdentifier=p.key * 10 + 1, IDOrganisationVisibleTo=ods,
                DateEventRecorded=tdate(p.reg_date.toordinal(), 10 * 3600),
                DateRegistration=tdate(p.reg_date.toordinal()), RegistrationStatus="Community",
                IDPatient=p.key, IDOrganisation=p.community_org, IDOrganisationRegisteredAt=p.community_org,
                RemovedData="0")
        for c in rec.consultations:
            if c.entered > as_of or (c.deleted is not None and c.deleted <= as_of):
                continue
            out["SREvent"][c.id] = _row(
                "SREvent", RowIdentifier=c.id, IDOrganisationVisibleTo=ods,
                DateEventRecorded=tdate(c.entered, c.entered_time), DateEvent=tdate(c.date, c.entered_time),
                IDProfileEnteredBy=STAFF_PROFILE_OFFSET + c.clinician, IDDoneBy=c.clinician,
                IDOrganisationDoneAt=c.org or ods, ContactEventLocation="GP Surgery",
                ContactMethod="Telephone" if c.ctype == "Telephone call" else "Face to face",
                EventIncomplete=FALSE, ClinicalEvent=TRUE, IDPatient=p.key, IDOrganisation=c.org or ods,
                IDOrganisationRegisteredAt=c.org or ods, RemovedData="0")
        problem_of = {pr.event: pr for pr in rec.problems}
        for e in rec.events:
            if e.entered > as_of or (e.deleted is not None and e.deleted <= as_of):
                continue
            value, episode = e.value, e.episode
            if e.changes:
                for when, fld, val in e.changes:
                    if when <= as_of:
                        if fld == "value":
                            value = val
                        elif fld == "episode":
                            episode = val
            concept = self.cat.concepts[e.code]
            org = e.org or ods
            out["SRCode"][e.id] = _row(
                "SRCode", RowIdentifier=e.id, IDOrganisationVisibleTo=ods,
                DateEventRecorded=tdate(e.entered, e.entered_time), DateEvent=tdate(e.date, e.entered_time),
                IDProfileEnteredBy=STAFF_PROFILE_OFFSET + e.clinician, IDDoneBy=e.clinician,
                IDOrganisationDoneAt=org, CTV3Code=concept.ctv3, CTV3Text=concept.term, SNOMEDCode=concept.code,
                SNOMEDText=concept.term, IsNumeric=TRUE if value is not None else FALSE,
                EpisodeType=EPISODE_TYPE[episode][0] if episode in EPISODE_TYPE else (episode or ""),
                NumericValue=_num(value), NumericUnit=e.unit if value is not None else "",
                IDEvent=e.consultation or "", IDPatient=p.key, IDOrganisation=org, IDOrganisationRegisteredAt=org,
                RemovedData="0")
            pr = problem_of.get(e.id)
            if pr is not None and e.org is None:
                ended = pr.end is not None and pr.end_entered is not None and pr.end_entered <= as_of
                out["SRProblem"][e.id] = _row(
                    "SRProblem", RowIdentifier=e.id, IDOrganisationVisibleTo=ods,
                    DateEventRecorded=tdate(e.entered, e.entered_time), DateEvent=tdate(e.date),
                    IDProfileEnteredBy=STAFF_PROFILE_OFFSET + e.clinician, IDDoneBy=e.clinician,
                    IDOrganisationDoneAt=ods, CTV3Code=concept.ctv3, DateEnd=tdate(pr.end) if ended else "",
                    IDCode=e.id, IDEvent=e.consultation or "", IDPatient=p.key, IDOrganisation=ods,
                    IDOrganisationRegisteredAt=ods, RemovedData="0")
        for a in rec.appointments:
            if a.booked > as_of:
                continue
            final = a.outcome_on <= as_of and a.outcome != "booked"
            status = APPOINTMENT_STATUS[a.outcome if final else "booked"][0]
            start_s = a.start_min * 60
            out["SRAppointment"][a.id] = _row(
                "SRAppointment", RowIdentifier=a.id, IDOrganisationVisibleTo=ods, DateStart=tdate(a.date, start_s),
                DateEnd=tdate(a.date, start_s + a.duration * 60), AppointmentStatus=status,
                DateAppointmentBooked=tdate(a.booked, a.booked_min * 60),
                DatePatientArrival=tdate(a.date, start_s - 300) if (final and a.outcome == "attended") else "",
                DatePatientSeen=tdate(a.date, start_s + 300) if (final and a.outcome == "attended") else "",
                FollowUpAppointment=FALSE, TelephoneAppointment=TRUE if a.mode == "Telephone/Audio" else FALSE,
                IDClinician=a.clinician, IDProfileClinician=STAFF_PROFILE_OFFSET + a.clinician,
                RotaName=f"{a.ampm} {a.slot_type}", RotaType=a.slot_type, RotaLocation="Main surgery",
                IDRota=_rota_id(a.clinician, a.date, a.ampm),
                DateAppointmentCancelled=tdate(a.outcome_on, 11 * 3600)
                if (final and a.outcome.startswith("cancelled")) else "",
                IDPatient=p.key, IDOrganisation=ods, IDOrganisationRegisteredAt=ods, RemovedData="0")
            method = APPOINTMENT_METHOD.get(a.mode)
            if method is not None:  # the slot type's appointment method, one flag per appointment
                out["SRAppointmentFlags"][a.id] = _row(
                    "SRAppointmentFlags", RowIdentifier=a.id, IDOrganisationVisibleTo=ods, IDAppointment=a.id,
                    Flag=method, RemovedData="0")
        for au in rec.authorisations:
            if au.entered > as_of:
                continue
            ended = au.end is not None and au.end_entered is not None and au.end_entered <= as_of
            out["SRRepeatTemplate"][au.id] = _row(
                "SRRepeatTemplate", RowIdentifier=au.id, IDOrganisationVisibleTo=ods,
                DateEventRecorded=tdate(au.entered, 11 * 3600), DateEvent=tdate(au.start),
                IDProfileEnteredBy=STAFF_PROFILE_OFFSET + au.clinician, IDDoneBy=au.clinician,
                IDOrganisationDoneAt=ods, IDMultiLexDMD=au.drug.dmd, NameOfMedication=free_text_name(au.drug),
                DateMedicationTemplateStart=tdate(au.start), DateMedicationTemplateEnd=tdate(au.end) if ended else "",
                MedicationDosage=au.drug.dosage, MedicationQuantity=f"{au.drug.quantity} {au.drug.unit}",
                MaxIssues=au.max_issues, CourseLengthPerIssue=au.drug.course_days,
                DrugStatus="Ended" if ended else "Active", IDPatient=p.key, IDOrganisation=ods,
                IDOrganisationRegisteredAt=ods, RemovedData="0")
        for i in rec.issues:
            if i.entered > as_of or (i.deleted is not None and i.deleted <= as_of):
                continue
            out["SRPrimaryCareMedication"][i.id] = _row(
                "SRPrimaryCareMedication", RowIdentifier=i.id, IDOrganisationVisibleTo=ods,
                DateEventRecorded=tdate(i.entered, 11 * 3600 + 300), DateEvent=tdate(i.date),
                IDProfileEnteredBy=STAFF_PROFILE_OFFSET + i.clinician, IDDoneBy=i.clinician,
                IDOrganisationDoneAt=ods, IDMultiLexDMD=i.drug.dmd, NameOfMedication=free_text_name(i.drug),
                DateMedicationStart=tdate(i.date), DateMedicationEnd=tdate(i.date + i.drug.course_days),
                MedicationDosage=i.drug.dosage, MedicationQuantity=f"{codes.quantity_text(i.issued_quantity)} {i.drug.unit}",
                IsRepeatMedication=TRUE if i.drug.repeat else FALSE, IsOtherMedication=FALSE,
                IsDentalMedication=FALSE, IsHospitalMedication=FALSE, IDRepeatTemplate=i.auth, IDPatient=p.key,
                IDOrganisation=ods, IDOrganisationRegisteredAt=ods, RemovedData="0")
        return out

    def practice_tables(self, as_of: int) -> dict[str, dict]:
        w = self.world
        out: dict[str, dict] = {n: {} for n in ("SRStaffMember", "SRStaffMemberProfile", "SROrganisation", "SRRota",
                                                "SRMapping")}
        for key, label in APPOINTMENT_STATUS.values():
            out["SRMapping"][key] = _row("SRMapping", RowIdentifier=key, IdMappingGroup=1, Mapping=label)
        for key, label in EPISODE_TYPE.values():
            out["SRMapping"][key] = _row("SRMapping", RowIdentifier=key, IdMappingGroup=2, Mapping=label)
        orgs = {w.community_org: "Community Nursing Service (synthetic)"}
        for prac in w.practices:
            if prac.activated:
                orgs[prac.ods_code] = prac.name
        for i, (ods, name) in enumerate(sorted(orgs.items())):
            out["SROrganisation"][i + 1] = _row("SROrganisation", RowIdentifier=i + 1, Name=name, ID=ods,
                                                NameOfTown="Leeds", MadeObsolete=FALSE, RemovedData="0")
        first, last = session_window(w)
        for s in w.staff:
            out["SRStaffMember"][s.key] = _row("SRStaffMember", RowIdentifier=s.key,
                                               StaffName=f"{s.title} {s.given} {s.surname}",
                                               StaffUserName=f"user{s.key}", Obsolete=FALSE, RemovedData="0")
            out["SRStaffMemberProfile"][STAFF_PROFILE_OFFSET + s.key] = _row(
                "SRStaffMemberProfile", RowIdentifier=STAFF_PROFILE_OFFSET + s.key,
                DateProfileCreated=tdate(s.contract_start.toordinal()), StaffRole=s.job_category_name,
                DateEmploymentStart=tdate(s.contract_start.toordinal()), IDStaffMember=s.key,
                IDOrganisation=s.ods_code, RemovedData="0")
            if s.role == "Receptionist":
                continue
            for day in range(first, min(last, as_of + 42) + 1):
                if not works(s.key, day):
                    continue
                for ampm in ("AM", "PM"):
                    rid = _rota_id(s.key, day, ampm)
                    out["SRRota"][rid] = _row(
                        "SRRota", RowIdentifier=rid, IDOrganisationVisibleTo=s.ods_code,
                        DateCreation=tdate(day - 42, 9 * 3600), IDProfileCreatedBy=STAFF_PROFILE_OFFSET + s.key,
                        Name=f"{s.surname} {ampm}", RotaType="Routine", Location="Main surgery",
                        IDProfileOwner=STAFF_PROFILE_OFFSET + s.key, DateStart=tdate(day, 8 * 3600 + 1800),
                        AllowOverBooking=FALSE, RemovedData="0")
        return out


def _rota_id(staff_key: int, day: int, ampm: str) -> int:
    return (staff_key * 1_000_000 + day) * 2 + (ampm == "PM")


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def _diff(name: str, old: dict, new: dict) -> list[tuple]:
    rows = [row for key, row in new.items() if old.get(key) != row]
    if "RemovedData" in COLS[name]:
        rows += [removed_row(name, row) for key, row in old.items() if key not in new]
    return rows


def tables_as_of(world: World, as_of: dt.date) -> dict[str, dict]:
    view = TppView(world)
    d = as_of.toordinal()
    out = view.practice_tables(d)
    staff_by_ods = {p.ods_code: world.staff_of(p.ods_code) for p in world.practices if p.activated}
    for p in world.delivered_patients():
        rec = patient_record(world, p, staff_by_ods[p.ods_code])
        for name, rows in view.patient_tables(rec, d).items():
            out.setdefault(name, {}).update(rows)
    return out


def snapshot(world: World, on: dt.date) -> dict[str, list[tuple]]:
    return {name: list(rows.values()) for name, rows in tables_as_of(world, on).items()}


def delta(world: World, day: dt.date, since: dt.date | None = None) -> dict[str, list[tuple]]:
    """Rows changed after data date ``since`` (default: the day before) up to ``day``."""
    since = since or day - dt.timedelta(days=1)
    old, new = tables_as_of(world, since), tables_as_of(world, day)
    return {name: _diff(name, old.get(name, {}), rows) for name, rows in new.items()}


def cutoff(data_date: dt.date) -> dt.datetime:
    """The extract cut-off: midnight after the data date."""
    return dt.datetime.combine(data_date + dt.timedelta(days=1), dt.time(0, 0))


def write_batch(world: World, tables: dict[str, list[tuple]], gateway: Path, *, data_date: dt.date,
                full: set[str] | frozenset = frozenset(), since: dt.date | None = None, all_full: bool = False,
                produced_at: dt.time = dt.time(3, 15)) -> Path:
    """Write one SystmOne batch folder: the SR files with rows, then SRManifest.csv (last).

    ``full`` names files sent in full (IsDelta = N) in a delta batch (a re-bulk of that file);
    ``all_full`` marks a bulk. ``since`` is the previous cut-off's data date (DateExtractFrom).
    """
    to = cutoff(data_date)
    folder = gateway / f"{to:%Y%m%d}_{produced_at:%H%M}"
    folder.mkdir(parents=True, exist_ok=True)
    frm = cutoff(since) if since else None
    manifest = []
    names = list(FILES) + list(UNLISTED) + list(ALWAYS_EMPTY)
    for name in names:
        rows = tables.get(name, [])
        is_full = all_full or name in full
        if not rows and not is_full and name not in ALWAYS_EMPTY:
            continue  # not every file is in every batch
        _write_csv(folder / f"{name}.csv", COLS[name], rows)
        if name in UNLISTED:
            continue
        undated = name in ALWAYS_EMPTY
        manifest.append({
            "FileName": name,
            "IsDelta": "N" if is_full else "Y",
            "IsReference": "N",
            "DateExtractFrom": "" if (is_full or undated or frm is None) else f"{frm:%Y%m%d_%H%M}",
            "DateExtractTo": "" if undated else f"{to:%Y%m%d_%H%M}",
        })
    # the manifest goes last: its presence marks the batch complete
    tmp = folder / "SRManifest.csv.tmp"
    _write_csv(tmp, COLS_MANIFEST, [tuple(m[c] for c in COLS_MANIFEST) for m in manifest])
    tmp.replace(folder / "SRManifest.csv")
    return folder


COLS_MANIFEST = ["FileName", "IsDelta", "IsReference", "DateExtractFrom", "DateExtractTo"]


def _write_csv(path: Path, cols: list[str], rows: Iterable[tuple]) -> int:
    n = 0
    with open(path, "w", newline="", encoding=ENCODING, errors="replace") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(r)
            n += 1
    return n
