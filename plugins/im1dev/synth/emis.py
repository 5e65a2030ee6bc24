"""EMIS v8.2 deliveries from the simulated world, in the real delivery format.

Every field is double-quoted (header too), lines end in CRLF, text is UTF-8, GUIDs are braced
upper case, booleans are ``true``/``false`` and dates ISO. Each table is one file named with the
current 6-part pattern (legacy 5-part on request), PGP-encrypted (compressed) to the consumer's
public key, under ``{feed folder}/{yyyyMMdd}/``; on the supplier's SFTP site the feed folder is
``.../IM1/sftp/{sharing agreement GUID}``.

The bulk is the snapshot of every table on the first data date; each daily delta is, per table,
the difference between consecutive snapshots (as EMIS computes it): new and changed rows in
full, removed records as sparse ``Deleted = true`` rows. A record changed twice in one day
travels twice, under increasing ProcessingIds.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from im1 import emis, specs
from im1.crypto import Keyring
from im1dev.synth import clinical, codes
from im1dev.synth.clinical import PatientRecord, patient_record, session_window, works
from im1dev.synth.world import Patient, World, guid_from_bits

TRUE, FALSE = "true", "false"
TABLES = sorted(specs.emis_tables())
PER_PATIENT = (
    "Admin_Patient", "Admin_PatientHistory", "Appointment_Slot", "Audit_PatientAudit", "Audit_RegistrationAudit",
    "CareRecord_Consultation", "CareRecord_Diary", "CareRecord_Observation", "CareRecord_ObservationReferral",
    "CareRecord_Problem", "Prescribing_DrugRecord", "Prescribing_IssueRecord",
)
# a concept whose Coding_ClinicalCode row arrives one batch after the first observation using it
LATE_CODE = "37796009"  # Migraine


def _b(v: bool) -> str:
    return TRUE if v else FALSE


_ISO: dict[int, str] = {}


def iso(day: int | None) -> str:
    if day is None:
        return ""
    s = _ISO.get(day)
    if s is None:
        s = _ISO[day] = dt.date.fromordinal(day).isoformat()
    return s


def hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def num(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


class Columns:
    """Column order of one table (8.2) without ProcessingId, and how to write another version."""

    def __init__(self, table: str):
        t = specs.emis_table(table)
        self.table = table
        self.names = [c for c in t.column_names("8.2") if c != "ProcessingId"]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.has_pid = t.has_processing_id
        self.has_deleted = t.has_deleted

    def row(self, **values: str) -> tuple:
        return tuple(values.get(n, "") for n in self.names)

    def header(self, version: str) -> list[str]:
        return specs.emis_table(self.table).column_names(version)

    def projector(self, version: str):
        """Map an 8.2 row (without ProcessingId) to the column order of ``version`` (with it)."""
        cols = self.header(version)
        idx = [self.index.get(c) for c in cols]

        def project(row: tuple, pid: int | None) -> list[str]:
            return [str(pid) if c == "ProcessingId" else ("" if i is None else row[i]) for c, i in zip(cols, idx,
                                                                                                      strict=True)]

        return project


COLS = {t: Columns(t) for t in TABLES}


# Appointment_Slot.SlotStatus for each outcome of a booked slot (a finished appointment is "Left")
SLOT_STATUS = {"booked": "Booked", "attended": "Left", "dna": "Did Not Attend",
               "cancelled_patient": "Cancelled by Patient", "cancelled_practice": "Cancelled by Practice"}


def session_guid(world: World, ods: str, day: int, clinician: int, ampm: str) -> str:
    """Sessions are identified by practice, day, clinician and half-day; the GUID is derived from that."""
    import hashlib

    h = hashlib.blake2b(f"{world.seed}:session:{ods}:{day}:{clinician}:{ampm}".encode(), digest_size=16).digest()
    return guid_from_bits(int.from_bytes(h, "big"))


class EmisView:
    """Renders the world's facts as EMIS rows as of a data date (a proleptic ordinal)."""

    def __init__(self, world: World):
        self.world = world
        self.cat = codes.catalogue()
        self.staff = {s.key: s for s in world.staff}
        self.first_day = world.start.toordinal()
        self.patient_guid = {}

    # -- per patient -----------------------------------------------------------------------
    def patient_tables(self, rec: PatientRecord, as_of: int) -> dict[str, dict]:
        p = rec.patient
        out: dict[str, dict] = {t: {} for t in PER_PATIENT}
        if p.reg_date.toordinal() > as_of:
            return out
        org = p.org_guid
        pg = p.patient_guid
        ug = self.staff
        out["Admin_Patient"][pg] = self._patient_row(p, as_of)
        cols = COLS["Admin_PatientHistory"]
        for h in rec.history:
            if h.entered <= as_of:
                out["Admin_PatientHistory"][(pg, h.date, h.status)] = cols.row(
                    PatientGuid=pg, OrganisationGuid=org, HistoryDate=iso(h.date), HistoryTime="09:00:00",
                    StatusDescription=h.status)
        out["Audit_RegistrationAudit"][(pg, "reg")] = COLS["Audit_RegistrationAudit"].row(
            PatientGuid=pg, OrganisationGuid=org, ModifiedDate=iso(p.reg_date.toordinal()), ModifiedTime="09:00:00",
            UserInRoleGuid=p.usual_gp_guid or "", ModeType="Add")
        if p.left_known(as_of):
            out["Audit_RegistrationAudit"][(pg, "dereg")] = COLS["Audit_RegistrationAudit"].row(
                PatientGuid=pg, OrganisationGuid=org, ModifiedDate=iso(p.left_recorded.toordinal()),
                ModifiedTime="09:30:00", UserInRoleGuid=p.usual_gp_guid or "", ModeType="Edit")

        cons_guid = {}
        c_cols = COLS["CareRecord_Consultation"]
        appt_guid = {a.id: a.guid for a in rec.appointments}
        for c in rec.consultations:
            cons_guid[c.id] = c.guid
            if c.entered > as_of or (c.deleted is not None and c.deleted <= as_of):
                continue
            out["CareRecord_Consultation"][c.guid] = c_cols.row(
                ConsultationGuid=c.guid, PatientGuid=pg, OrganisationGuid=org, EffectiveDate=iso(c.date),
                EffectiveDatePrecision="YMD", EnteredDate=iso(c.entered), EnteredTime=hms(c.entered_time),
                ClinicianUserInRoleGuid=ug[c.clinician].user_in_role_guid,
                EnteredByUserInRoleGuid=ug[c.clinician].user_in_role_guid,
                AppointmentSlotGuid=appt_guid.get(c.slot, "") if c.slot else "", ConsultationSourceTerm=c.ctype,
                Complete=TRUE, ConsultationType=c.ctype, Deleted=FALSE, IsConfidential=FALSE)

        ev_guid = {e.id: e.guid for e in rec.events}
        problem_of = {pr.event: pr for pr in rec.problems}
        obs = out["CareRecord_Observation"]
        refs = out["CareRecord_ObservationReferral"]
        probs = out["CareRecord_Problem"]
        r_cols, pr_cols = COLS["CareRecord_ObservationReferral"], COLS["CareRecord_Problem"]
        code_id = self.cat.concepts
        for e in rec.events:
            if e.entered > as_of or (e.deleted is not None and e.deleted <= as_of) or e.org is not None:
                continue
            value, episode = e.value, e.episode
            if e.changes:
                for when, fld, val in e.changes:
                    if when <= as_of:
                        if fld == "value":
                            value = val
                        elif fld == "episode":
                            episode = val
            obs[e.guid] = self._obs_row(e, pg, org, value, ev_guid, cons_guid, code_id, episode)
            if e.referral:
                r = e.referral
                refs[e.guid] = r_cols.row(
                    ObservationGuid=e.guid, PatientGuid=pg, OrganisationGuid=org,
                    ReferralTargetOrganisationGuid=r["target"], ReferralUrgency=r["urgency"],
                    ReferralServiceType=r["service"], ReferralMode=r["mode"], ReferralUBRN=r["ubrn"],
                    TransportRequired=FALSE)
            pr = problem_of.get(e.id)
            if pr is not None:
                ended = pr.end is not None and pr.end_entered is not None and pr.end_entered <= as_of
                probs[e.guid] = pr_cols.row(
                    ObservationGuid=e.guid, PatientGuid=pg, OrganisationGuid=org, Deleted=FALSE,
                    EndDate=iso(pr.end) if ended else "", EndDatePrecision="YMD" if ended else "U",
                    ExpectedDuration="0", ProblemStatusDescription="Past" if ended else "Active",
                    SignificanceDescription="Significant Problem" if e.tag.startswith("dx:") else "Minor Problem")

        d_cols = COLS["CareRecord_Diary"]
        for d in rec.diary:
            if d.entered > as_of:
                continue
            done = d.done is not None and d.done <= as_of
            concept = self.cat.concepts[d.code]
            out["CareRecord_Diary"][d.guid] = d_cols.row(
                DiaryGuid=d.guid, PatientGuid=pg, OrganisationGuid=org, EffectiveDate=iso(d.due),
                EffectiveDatePrecision="YMD", EnteredDate=iso(d.entered), EnteredTime="10:00:00",
                ClinicianUserInRoleGuid=ug[d.clinician].user_in_role_guid,
                EnteredByUserInRoleGuid=ug[d.clinician].user_in_role_guid, CodeId=str(concept.emis_code_id),
                OriginalTerm=concept.term, Deleted=FALSE, IsConfidential=FALSE, IsActive=_b(not done),
                IsComplete=_b(done))

        dr_cols, ir_cols = COLS["Prescribing_DrugRecord"], COLS["Prescribing_IssueRecord"]
        for a in rec.authorisations:
            if a.entered > as_of:
                continue
            ended = a.end is not None and a.end_entered is not None and a.end_entered <= as_of
            issued = sum(1 for i in a.issues if i <= as_of)
            who = ug[a.clinician].user_in_role_guid
            out["Prescribing_DrugRecord"][a.guid] = dr_cols.row(
                DrugRecordGuid=a.guid, PatientGuid=pg, OrganisationGuid=org, EffectiveDate=iso(a.start),
                EffectiveDatePrecision="YMD", EnteredDate=iso(a.entered), EnteredTime="11:00:00",
                ClinicianUserInRoleGuid=who, EnteredByUserInRoleGuid=who, CodeId=str(a.drug.emis_code_id),
                Dosage=a.drug.dosage, Quantity=str(a.drug.quantity), QuantityUnit=a.drug.unit,
                PrescriptionType="Repeat" if a.repeat else "Acute", IsActive=_b(not ended),
                CancellationDate=iso(a.end) if ended else "", NumberOfIssues=str(issued),
                NumberOfIssuesAuthorised=str(a.max_issues), IsConfidential=FALSE, Deleted=FALSE)
        for i in rec.issues:
            if i.entered > as_of or (i.deleted is not None and i.deleted <= as_of):
                continue
            who = ug[i.clinician].user_in_role_guid
            out["Prescribing_IssueRecord"][i.guid] = ir_cols.row(
                IssueRecordGuid=i.guid, PatientGuid=pg, OrganisationGuid=org, DrugRecordGuid=i.auth_guid,
                EffectiveDate=iso(i.date), EffectiveDatePrecision="YMD", EnteredDate=iso(i.entered),
                EnteredTime="11:05:00", ClinicianUserInRoleGuid=who, EnteredByUserInRoleGuid=who,
                CodeId=str(i.drug.emis_code_id), Dosage=i.drug.dosage, Quantity=codes.quantity_text(i.issued_quantity),
                QuantityUnit=i.drug.unit, CourseDurationInDays=str(i.drug.course_days),
                EstimatedNhsCost=f"{i.drug.cost_pence / 100:.2f}", IsConfidential=FALSE,
                IsPrescribedAsContraceptive=FALSE, IsPrivatelyPrescribed=_b(i.private),
                IssueMethodDescription="Electronic Prescription Service", Deleted=FALSE)

        s_cols = COLS["Appointment_Slot"]
        for a in rec.appointments:
            if a.booked > as_of:
                continue
            out["Appointment_Slot"][a.guid] = self._slot_row(s_cols, a, p, as_of)

        pa_cols = COLS["Audit_PatientAudit"]
        for e in rec.events:
            if e.deleted is not None and e.deleted <= as_of and e.entered < e.deleted and e.org is None:
                out["Audit_PatientAudit"][(e.guid, "Delete")] = pa_cols.row(
                    ItemGuid=e.guid, PatientGuid=pg, OrganisationGuid=org, ModifiedDate=iso(e.deleted),
                    ModifiedTime="16:00:00", UserInRoleGuid=ug[e.clinician].user_in_role_guid,
                    ItemType="Observation", ModeType="Delete")
        return out

    def _patient_row(self, p: Patient, as_of: int) -> tuple:
        left_known = p.left_known(as_of)
        dereg = p.dereg_date.toordinal() if (p.dereg_date and left_known) else None
        death = p.death_date.toordinal() if (p.death_date and left_known) else None
        return COLS["Admin_Patient"].row(
            PatientGuid=p.patient_guid, OrganisationGuid=p.org_guid, UsualGpUserInRoleGuid=p.usual_gp_guid or "",
            Sex=p.sex, DateOfBirth=iso(p.dob.toordinal()), DateOfDeath=iso(death), Title=p.title,
            GivenName=p.given, MiddleNames=p.middle, Surname=p.surname, DateOfRegistration=iso(p.reg_date.toordinal()),
            NhsNumber=p.nhs_number, PatientNumber=str(p.patient_number),
            PatientTypeDescription="Dummy" if p.dummy else p.reg_type, DummyType=_b(p.dummy),
            HouseNameFlatNumber=p.house, NumberAndStreet=p.street, Town=p.town,
            Postcode=p.postcode.replace(" ", "")[:7], NHSNumberStatus="01", PersonGuid=p.person_guid,
            DateofDeactivation=iso(dereg), Deleted=FALSE, SpineSensitive=_b(p.spine_sensitive),
            IsConfidential=_b(p.confidential))

    def _obs_row(self, e, pg, org, value, ev_guid, cons_guid, concepts, episode=None) -> tuple:
        concept = concepts[e.code]
        who = self.staff[e.clinician].user_in_role_guid
        return (
            e.guid, pg, org, iso(e.date), "YMD", iso(e.entered), hms(e.entered_time), who, who,
            ev_guid.get(e.parent, "") if e.parent else "", str(concept.emis_code_id), "",
            cons_guid.get(e.consultation, "") if e.consultation else "", num(value), e.unit if value is not None else "",
            "Value" if value is not None else ("Referral" if e.referral else "Observation"), "", "", "", "", FALSE, "",
            e.episode if episode is None else episode, FALSE, _b(e.confidential),
        )

    def _slot_row(self, cols: Columns, a: clinical.Appointment, p: Patient, as_of: int) -> tuple:
        final = a.outcome_on <= as_of and a.outcome != "booked"
        status, dna, send_in, left, wait, delay, actual = SLOT_STATUS["booked"], "", "", "", "", "", ""
        if final:
            status = SLOT_STATUS[a.outcome]
            if a.outcome == "attended":
                w = 5 + (a.id % 11)
                dna = FALSE
                send_in = hms((a.start_min + w) * 60)
                left = hms((a.start_min + w + a.duration) * 60)
                wait, delay, actual = str(w), str(max(0, w - 3)), str(a.duration)
            elif a.outcome == "dna":
                dna = TRUE
        return cols.row(
            SlotGuid=a.guid, AppointmentDate=iso(a.date), AppointmentStartTime=hms(a.start_min * 60),
            PlannedDurationInMinutes=str(a.duration), PatientGuid=p.patient_guid, SendInTime=send_in, LeftTime=left,
            DidNotAttend=dna, PatientWaitInMin=wait, AppointmentDelayInMin=delay, ActualDurationInMinutes=actual,
            OrganisationGuid=p.org_guid,
            SessionGuid=session_guid(self.world, p.ods_code, a.date, a.clinician, a.ampm),
            BookedDate=iso(a.booked), BookedTime=hms(a.booked_min * 60), SlotStatus=status, SlotType=a.slot_type,
            IsBookableOnline=_b(a.slot_type == "Routine"), BookingMethod="Telephone" if a.id % 3 else "Online",
            ModeOfContact=a.mode, IsBlocked=FALSE, ContextType=a.context, ServiceSetting="General Practice",
            NationalSlotCategoryName=a.category,
            NationalSlotCategoryDescription=f"{a.category} (synthetic description)", Deleted=FALSE)

    # -- shared and practice level ---------------------------------------------------------------
    def practice_tables(self, as_of: int) -> dict[str, dict]:
        w = self.world
        out: dict[str, dict] = {t: {} for t in TABLES if t not in PER_PATIENT or t == "Appointment_Slot"}
        for prac in w.practices:
            out["Agreements_SharingOrganisation"][prac.org_guid] = COLS["Agreements_SharingOrganisation"].row(
                OrganisationGuid=prac.org_guid, IsActivated=_b(prac.activated),
                LastModifiedDate=f"{w.start - dt.timedelta(days=30):%Y-%m-%d} 06:35:16", Disabled=FALSE, Deleted=FALSE)
            if not prac.activated:
                continue
            out["Admin_Organisation"][prac.org_guid] = COLS["Admin_Organisation"].row(
                OrganisationGuid=prac.org_guid, CDB=str(prac.cdb), OrganisationName=prac.name, ODSCode=prac.ods_code,
                ParentOrganisationGuid=prac.ccg_guid, CCGOrganisationGuid=prac.ccg_guid,
                OrganisationType="General Practice", OpenDate=prac.open_date.isoformat(),
                MainLocationGuid=prac.location_guid)
            out["Admin_Location"][prac.location_guid] = COLS["Admin_Location"].row(
                LocationGuid=prac.location_guid, LocationName=prac.name, LocationTypeDescription="Main Surgery",
                OpenDate=prac.open_date.isoformat(), Postcode=prac.postcode.replace(" ", "")[:7], Deleted=FALSE)
            out["Admin_OrganisationLocation"][(prac.org_guid, prac.location_guid)] = COLS[
                "Admin_OrganisationLocation"].row(OrganisationGuid=prac.org_guid, LocationGuid=prac.location_guid,
                                                  IsMainLocation=TRUE, Deleted=FALSE)
            self._sessions(out, prac, as_of)
        for s in w.staff:
            out["Admin_UserInRole"][s.user_in_role_guid] = COLS["Admin_UserInRole"].row(
                UserInRoleGuid=s.user_in_role_guid, OrganisationGuid=s.org_guid, Title=s.title, GivenName=s.given,
                Surname=s.surname, JobCategoryCode=s.job_category_code, JobCategoryName=s.job_category_name,
                ContractStartDate=s.contract_start.isoformat())
        cc = COLS["Coding_ClinicalCode"]
        for concept in self.cat.concepts.values():
            if concept.code == LATE_CODE and as_of <= self.first_day:
                continue
            out["Coding_ClinicalCode"][(concept.emis_code_id, "")] = cc.row(
                CodeId=str(concept.emis_code_id), Term=concept.term, SnomedCTConceptId=concept.code,
                SnomedCTDescriptionId="", EmisCodeCategoryDescription=_category(concept),
                ParentCodeID="")
        # CodeId alone is not unique in Coding_ClinicalCode (pitfall 9): one code under two parents
        bp = self.cat.concepts[codes.BP_SYSTOLIC]
        parent = self.cat.concepts[codes.BP_PARENT].emis_code_id
        out["Coding_ClinicalCode"][(bp.emis_code_id, parent)] = cc.row(
            CodeId=str(bp.emis_code_id), Term=bp.term, SnomedCTConceptId=bp.code, SnomedCTDescriptionId="",
            EmisCodeCategoryDescription="Clinical Value", ParentCodeID=str(parent))
        dc = COLS["Coding_DrugCode"]
        for d in self.cat.drugs:
            out["Coding_DrugCode"][d.emis_code_id] = dc.row(CodeId=str(d.emis_code_id), Term=d.name,
                                                            DmdProductCodeId=d.dmd)
        return out

    def _sessions(self, out: dict, prac, as_of: int) -> None:
        first, last = session_window(self.world)
        clinicians = self.world.staff_of(prac.ods_code)
        s_cols, su_cols, sl_cols = COLS["Appointment_Session"], COLS["Appointment_SessionUser"], COLS["Appointment_Slot"]
        for day in range(first, min(last, as_of + 42) + 1):
            for c in clinicians:
                if not works(c.key, day):
                    continue
                for ampm in ("AM", "PM"):
                    g = session_guid(self.world, prac.ods_code, day, c.key, ampm)
                    t0, t1 = ("08:30:00", "12:00:00") if ampm == "AM" else ("14:00:00", "17:30:00")
                    out["Appointment_Session"][g] = s_cols.row(
                        AppointmentSessionGuid=g, Description=f"{c.title} {c.surname} {ampm} surgery",
                        LocationGuid=prac.location_guid, SessionTypeDescription="Timed Appointments",
                        SessionCategoryDisplayName=c.role, StartDate=iso(day), StartTime=t0, EndDate=iso(day),
                        EndTime=t1, Private=FALSE, OrganisationGuid=prac.org_guid, Deleted=FALSE)
                    out["Appointment_SessionUser"][(g, c.user_in_role_guid)] = su_cols.row(
                        SessionGuid=g, UserInRoleGuid=c.user_in_role_guid, Deleted=FALSE)
                    # slots nobody booked (and the odd blocked one), practice-level
                    r = random.Random(f"{self.world.seed}:{g}")
                    for k in range(r.choice((0, 1, 1, 2, 2, 3))):
                        sg = guid_from_bits(r.getrandbits(128))
                        blocked = r.random() < 0.03
                        out["Appointment_Slot"][sg] = sl_cols.row(
                            SlotGuid=sg, AppointmentDate=iso(day),
                            AppointmentStartTime=f"{(8 if ampm == 'AM' else 14) + k}:{r.choice(('00', '30'))}:00"
                            .rjust(8, "0"),
                            PlannedDurationInMinutes="10", OrganisationGuid=prac.org_guid, SessionGuid=g,
                            SlotStatus="Blocked" if blocked else "Slot Available", SlotType="Routine",
                            IsBookableOnline=TRUE, IsBlocked=_b(blocked), ContextType="Care Related Encounter",
                            ServiceSetting="General Practice", NationalSlotCategoryName="General Consultation Routine",
                            Deleted=FALSE)


def _category(concept: codes.Concept) -> str:
    if concept.kind == "value":
        return "Clinical Value"
    if concept.kind == "referral":
        return "Referral"
    return "Observation"


# -- snapshots and deltas --------------------------------------------------------------------


def delete_row(table: str, row: tuple) -> tuple:
    """The sparse row EMIS sends for a removed record: key GUIDs and Deleted = true, nothing else."""
    cols = COLS[table]
    keep = {n for n in cols.names if n.endswith("Guid") and n in _KEY_GUIDS.get(table, set())}
    return tuple(
        TRUE if n == "Deleted" else (row[i] if n in keep else "") for i, n in enumerate(cols.names)
    )


_KEY_GUIDS = {
    "Admin_Patient": {"PatientGuid", "OrganisationGuid"},
    "Admin_Location": {"LocationGuid"},
    "Admin_OrganisationLocation": {"OrganisationGuid", "LocationGuid"},
    "Appointment_Session": {"AppointmentSessionGuid", "OrganisationGuid"},
    "Appointment_SessionUser": {"SessionGuid", "UserInRoleGuid"},
    "Appointment_Slot": {"SlotGuid", "OrganisationGuid", "PatientGuid"},
    "CareRecord_Consultation": {"ConsultationGuid", "PatientGuid", "OrganisationGuid"},
    "CareRecord_Diary": {"DiaryGuid", "PatientGuid", "OrganisationGuid"},
    "CareRecord_Observation": {"ObservationGuid", "PatientGuid", "OrganisationGuid"},
    "CareRecord_Problem": {"ObservationGuid", "PatientGuid", "OrganisationGuid"},
    "Prescribing_DrugRecord": {"DrugRecordGuid", "PatientGuid", "OrganisationGuid"},
    "Prescribing_IssueRecord": {"IssueRecordGuid", "PatientGuid", "OrganisationGuid"},
    "Agreements_SharingOrganisation": {"OrganisationGuid"},
}


def _diff(old: dict, new: dict, table: str) -> list[tuple]:
    rows = [row for key, row in new.items() if old.get(key) != row]
    if COLS[table].has_deleted:
        rows += [delete_row(table, row) for key, row in old.items() if key not in new]
    return rows


def _intermediate(rec: PatientRecord, view: EmisView, day: int) -> list[tuple]:
    """Versions of observations that were superseded on the same day they were entered."""
    out = []
    ev_guid = {e.id: e.guid for e in rec.events}
    cons_guid = {c.id: c.guid for c in rec.consultations}
    for e in rec.events:
        if e.changes and e.entered == day and any(w == day for w, _f, _v in e.changes) and e.org is None:
            out.append(view._obs_row(e, rec.patient.patient_guid, rec.patient.org_guid, e.value, ev_guid, cons_guid,
                                     view.cat.concepts))
    return out


def iter_snapshot(world: World, as_of: dt.date, patients: Iterable[Patient] | None = None,
                  practice_level: bool = True) -> Iterator[tuple[str, tuple]]:
    """Every row of every table as of ``as_of`` (streamed patient by patient)."""
    view = EmisView(world)
    d = as_of.toordinal()
    if practice_level:
        for table, rows in view.practice_tables(d).items():
            for row in rows.values():
                yield table, row
    staff_by_ods = {p.ods_code: world.staff_of(p.ods_code) for p in world.practices if p.activated}
    for p in patients if patients is not None else world.delivered_patients():
        rec = patient_record(world, p, staff_by_ods[p.ods_code])
        for table, rows in view.patient_tables(rec, d).items():
            for row in rows.values():
                yield table, row


def delta(world: World, day: dt.date, patients: Iterable[Patient] | None = None,
          practice_level: bool = True) -> dict[str, list[tuple]]:
    """The rows EMIS sends for data date ``day``: per-table differences from the previous day.

    ``patients`` (default: every delivered patient) and ``practice_level`` let a large world's
    delta be computed in slices (see :func:`im1dev.synth.supplier.emis_delta`); the slices, in
    patient order after the practice-level tables, concatenate to the whole delta.
    """
    view = EmisView(world)
    d = day.toordinal()
    out: dict[str, list[tuple]] = {t: [] for t in TABLES}
    if practice_level:
        old, new = view.practice_tables(d - 1), view.practice_tables(d)
        for table in new:
            out[table] += _diff(old[table], new[table], table)
    staff_by_ods = {p.ods_code: world.staff_of(p.ods_code) for p in world.practices if p.activated}
    for p in patients if patients is not None else world.delivered_patients():
        rec = patient_record(world, p, staff_by_ods[p.ods_code])
        old, new = view.patient_tables(rec, d - 1), view.patient_tables(rec, d)
        out["CareRecord_Observation"] += _intermediate(rec, view, d)
        for table in new:
            out[table] += _diff(old[table], new[table], table)
    return out


def snapshot(world: World, on: dt.date) -> dict[str, list[tuple]]:
    """All rows of every table as of data date ``on`` (small worlds; big bulks stream, see write_bulk)."""
    out: dict[str, list[tuple]] = {t: [] for t in TABLES}
    for table, row in iter_snapshot(world, on):
        out[table].append(row)
    return out


def as_dicts(table: str, rows: Iterable[tuple]) -> list[dict]:
    names = COLS[table].names
    return [dict(zip(names, r, strict=True)) for r in rows]


# -- files -----------------------------------------------------------------------------------


def write_csv(path: Path, columns: list[str], rows: Iterable[dict]) -> int:
    """Write an EMIS-style CSV from dicts (all fields quoted, CRLF, UTF-8). Returns the data rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
            n += 1
    return n


class _Sink:
    """One table's output file: plain CSV, or piped straight into gpg (plaintext never on disk)."""

    def __init__(self, path: Path, gpg_home: str | None, recipient: str | None, compress_level: int):
        self.path = path
        self.proc = None
        if gpg_home:
            self.tmp = path.with_name(path.name + ".uploading")
            self.proc = subprocess.Popen(
                ["gpg", "--homedir", gpg_home, "--batch", "--yes", "--no-tty", "--trust-model", "always",
                 "--compress-algo", "zlib", "--compress-level", str(compress_level), "-r", recipient or "",
                 "-o", str(self.tmp), "-e"],
                stdin=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            self.fh = open(self.proc.stdin.fileno(), "w", newline="", encoding="utf-8", closefd=False,
                           buffering=1 << 20)
        else:
            self.fh = open(path, "w", newline="", encoding="utf-8", buffering=1 << 20)
        self.writer = csv.writer(self.fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        self.rows = 0

    def close(self) -> None:
        self.fh.close()
        if self.proc is not None:
            self.proc.stdin.close()
            err = self.proc.stderr.read().decode(errors="replace")
            if self.proc.wait() != 0:
                raise RuntimeError(f"gpg failed to encrypt {self.path.name}: {err.strip()[-400:]}")
            self.tmp.replace(self.path)


def open_batch(feed_dir: Path, world: World, extract_ts: dt.datetime, *, batch_number: int, export_type: str,
               keyring: Keyring | None, recipient: str | None, version: str = specs.LATEST_EMIS_VERSION,
               legacy_names: bool = False, compress_level: int = 6) -> dict[str, tuple]:
    """Open one output per table for a batch; returns table -> (sink, projector, header)."""
    folder = feed_dir / extract_ts.strftime("%Y%m%d")
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for table in TABLES:
        name = emis.format_name(table, extract_ts, world.agreement_guid, export_type=export_type,
                                batch_number=batch_number,
                                legacy_pids=f"{batch_number}-{batch_number}" if legacy_names else None,
                                encrypted=keyring is not None)
        sink = _Sink(folder / name, str(keyring.home) if keyring else None, recipient, compress_level)
        header = COLS[table].header(version)
        sink.writer.writerow(header)
        out[table] = (sink, COLS[table].projector(version))
    return out


def write_rows(batch: dict[str, tuple], table: str, rows: Iterable[tuple], pid_start: int = 1,
               shuffle_seed: str | None = None) -> int:
    """Write rows with ProcessingIds counting from ``pid_start`` (optionally out of order, as EMIS files can be)."""
    sink, project = batch[table]
    has_pid = COLS[table].has_pid
    numbered = [(pid_start + i if has_pid else None, r) for i, r in enumerate(rows)]
    if shuffle_seed and len(numbered) > 2:
        r = random.Random(shuffle_seed)
        for i in range(0, len(numbered) - 1, 2):
            if r.random() < 0.2:
                numbered[i], numbered[i + 1] = numbered[i + 1], numbered[i]
    duplicates = table == "Appointment_SessionUser"
    for i, (pid, row) in enumerate(numbered):
        line = project(row, pid)
        sink.writer.writerow(line)
        if duplicates and i % 97 == 5:
            # the supplier sends the odd identical SessionUser row twice (pitfall 4)
            sink.writer.writerow(line)
            sink.rows += 1
    sink.rows += len(numbered)
    return len(numbered)


def close_batch(batch: dict[str, tuple]) -> list[Path]:
    paths = []
    for sink, _p in batch.values():
        sink.close()
        paths.append(sink.path)
    return sorted(paths)


def write_batch(
    world: World,
    tables: dict[str, list],
    feed_dir: Path,
    *,
    extract_ts: dt.datetime,
    batch_number: int,
    export_type: str,
    keyring: Keyring | None,
    recipient: str | None,
    version: str = specs.LATEST_EMIS_VERSION,
    legacy_names: bool = False,
) -> list[Path]:
    """Write one batch (a file per table, header-only when empty), encrypted when a recipient is given.

    ``tables`` maps table -> rows, either tuples (8.2 order, as from :func:`snapshot`/:func:`delta`)
    or dicts keyed by column name.
    """
    batch = open_batch(feed_dir, world, extract_ts, batch_number=batch_number, export_type=export_type,
                       keyring=keyring, recipient=recipient, version=version, legacy_names=legacy_names)
    try:
        for table in TABLES:
            rows = tables.get(table, [])
            rows = [COLS[table].row(**r) if isinstance(r, dict) else r for r in rows]
            write_rows(batch, table, rows, shuffle_seed=None if export_type == "bulk" else
                       f"{world.seed}:{batch_number}:{table}")
    finally:
        paths = close_batch(batch)
    return paths
