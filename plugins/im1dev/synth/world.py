"""The simulated population behind every synthetic delivery.

A :class:`World` is generated from a seed: practices (each supplied by EMIS or TPP), staff with
their roles, and patients with registrations, transfers in and out, deaths and temporary
registrations over a timeline. Each patient's clinical record is generated on demand and
deterministically from the seed (:mod:`im1dev.synth.clinical`), so a 35,000-patient practice never
has to sit in memory. Deliveries (EMIS, TPP) are *views* of the world on a date; the ground
truth is computed from the world's facts, never from the files.

Time: ``start`` is the data date of the bulk. Day ``i`` of the timeline has data date
``start + i``; its extract is cut at midnight and stamped the following day (02:00).

No real person, NHS number or practice is represented: NHS numbers are in the 999 range that is
reserved for testing, and ODS codes are drawn from an unused ``Z``-prefixed range.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass, field

FEMALE_NAMES = ["Amelia", "Olivia", "Zoë", "Siobhán", "Aoife", "Chloé", "Fatima", "Grace", "Isla", "Maja",
                "Noémie", "Priya", "Ruth", "Sophie", "Yasmin", "Ewa", "Leila", "Ann-Marie", "Bethan", "Mái"]
MALE_NAMES = ["Oliver", "George", "Noah", "José", "Łukasz", "Mohammed", "Rhys", "Seán", "Thomas", "Arjun",
              "Jan", "Kofi", "Luca", "Mateusz", "Reuben", "Dafydd", "Émile", "Ibrahim", "Jack", "Callum"]
SURNAMES = ["Smith", "Jones", "Williams", "Brown", "Taylor", "Davies", "Evans", "Wilson", "Thomas", "O'Brien",
            "Patel", "Khan", "Nowak", "Müller", "García", "Ní Bhriain", "Kowalczyk", "Ahmed", "Dubois",
            "Ó Súilleabháin", "Roberts", "Walker", "Wright", "Robinson", "Thompson", "White", "Hughes",
            "Edwards", "Green", "Hall"]
TOWNS = ["Leeds", "Bradford", "York", "Harrogate", "Wakefield", "Halifax", "Huddersfield", "Selby"]
STREETS = ["High Street", "Station Road", "Church Lane", "Mill Road", "Park Avenue", "Victoria Street"]

# staff roles: (role, national job role code, its national name, GPAD HCP type, share of staff). The
# codes and names are the NHS SDS job role codes (R0xxx) that EMIS delivers as
# Admin_UserInRole.JobCategoryCode/Name and SystmOne as SRStaffMemberProfile.StaffRole (the name);
# dbt_project/casebook/sources.yml SDS-JOBROLE. The HCP type is the world's own fact for the
# generator; the ground truth derives GPAD's HCP type from the code (truth.GPAD_HCP).
ROLES = [
    ("GP", "R0260", "General Medical Practitioner", "GP", 0.45),
    ("Practice Nurse", "R0620", "Staff Nurse", "Other Practice staff", 0.25),
    ("Healthcare Assistant", "R1480", "Healthcare Assistant", "Other Practice staff", 0.15),
    ("Clinical Pharmacist", "R1290", "Pharmacist", "Other Practice staff", 0.10),
    ("Receptionist", "R1730", "Receptionist", "Other Practice staff", 0.05),
]
CLINICAL_ROLES = {"GP", "Practice Nurse", "Healthcare Assistant", "Clinical Pharmacist"}


def braced(u: uuid.UUID) -> str:
    return "{" + str(u).upper() + "}"


def guid_from_bits(bits: int) -> str:
    """A braced upper-case GUID (version 4 layout) from 128 random bits."""
    h = f"{bits:032X}"
    return f"{{{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89AB'[bits & 3]}{h[17:20]}-{h[20:]}}}"


def nhs_check_digit(nine: str) -> int | None:
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - (total % 11)
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def valid_nhs_number(n: str) -> bool:
    return len(n) == 10 and n.isdigit() and nhs_check_digit(n[:9]) == int(n[9])


@dataclass
class Practice:
    ods_code: str
    name: str
    org_guid: str
    location_guid: str
    ccg_guid: str
    cdb: int
    postcode: str
    open_date: dt.date
    supplier: str = "emis"  # emis | tpp
    activated: bool = True  # an agreement member that is not activated sends no data


@dataclass
class Staff:
    key: int
    user_in_role_guid: str
    org_guid: str
    ods_code: str
    title: str
    given: str
    surname: str
    role: str
    job_category_code: str
    job_category_name: str
    hcp_type: str  # GPAD: GP / Other Practice staff
    contract_start: dt.date


@dataclass
class Patient:
    key: int
    patient_guid: str
    person_guid: str
    org_guid: str
    ods_code: str
    nhs_number: str
    sex: str  # M / F / I / U
    dob: dt.date
    title: str
    given: str
    middle: str
    surname: str
    postcode: str
    house: str
    street: str
    town: str
    patient_number: int
    reg_date: dt.date
    reg_type: str  # "Regular" / "Temporary"
    usual_gp_guid: str | None
    dereg_date: dt.date | None = None
    death_date: dt.date | None = None
    dummy: bool = False
    spine_sensitive: bool = False
    confidential: bool = False
    # when the practice system learned of the death / deregistration (may lag a few days)
    dereg_entered: dt.date | None = None
    # shared care (TPP): the patient is also on the list of a community service
    community_org: str | None = None
    # further GMS registrations at the practice [(start, end or None)]; only SystmOne sends them
    extra_registrations: list | None = None
    # a QOF casebook case planted as this patient (its facts come from the case, not the generator)
    case: str | None = None

    def registered_on(self, d: dt.date) -> bool:
        return self.reg_date <= d and (self.dereg_date is None or self.dereg_date > d)

    @property
    def left_recorded(self) -> dt.date | None:
        """The day the practice recorded the deregistration or death (when it happened, by default)."""
        return self.dereg_entered or self.dereg_date

    def left_known(self, as_of: dt.date | int) -> bool:
        rec = self.left_recorded
        if rec is None:
            return False
        return (rec.toordinal() if isinstance(as_of, int) else rec) <= as_of


@dataclass
class World:
    seed: int
    agreement_guid: str  # upper case, no braces (as in EMIS file names)
    start: dt.date  # data date of the bulk
    days: int
    practices: list[Practice]
    staff: list[Staff] = field(default_factory=list)
    patients: list[Patient] = field(default_factory=list)
    years: float = 5.0  # years of clinical history before the bulk
    volume: float = 1.0  # 1.0 = realistic EMIS volumes per patient (im1-formats.md 2.11)
    population_window_years: int = 5  # left/deceased patients kept in the extract this long
    community_org: str = "Z99990"  # the community service whose shared-care rows TPP sends

    def practice(self, ods: str) -> Practice:
        return next(p for p in self.practices if p.ods_code == ods)

    @property
    def end(self) -> dt.date:
        """The last data date of the timeline."""
        return self.start + dt.timedelta(days=self.days - 1)

    def data_dates(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range(self.days)]

    @staticmethod
    def extract_ts(data_date: dt.date) -> dt.datetime:
        """Extracts are cut at midnight after the data date and stamped 02:00 that morning."""
        return dt.datetime.combine(data_date + dt.timedelta(days=1), dt.time(2, 0))

    def staff_of(self, ods: str, clinical: bool = True) -> list[Staff]:
        return [s for s in self.staff if s.ods_code == ods and (not clinical or s.role in CLINICAL_ROLES)]

    def patients_of(self, ods: str) -> list[Patient]:
        return [p for p in self.patients if p.ods_code == ods]

    def delivered_patients(self) -> list[Patient]:
        """Patients of activated practices (an agreement member that is not activated sends no data)."""
        active = {p.ods_code for p in self.practices if p.activated}
        return [p for p in self.patients if p.ods_code in active]


class Rng(random.Random):
    def guid(self) -> str:
        return guid_from_bits(self.getrandbits(128))

    def date_between(self, a: dt.date, b: dt.date) -> dt.date:
        return a + dt.timedelta(days=self.randint(0, max(0, (b - a).days)))

    def nhs_number(self, used: set[str]) -> str:
        while True:
            nine = "999" + f"{self.randint(0, 999999):06d}"
            c = nhs_check_digit(nine)
            if c is None:
                continue
            n = nine + str(c)
            if n not in used:
                used.add(n)
                return n


# UK-like age structure: weight per 5-year band 0-4 ... 95-99
_BAND_WEIGHTS = [5.4, 5.9, 6.0, 5.6, 5.8, 6.6, 6.9, 6.8, 6.5, 6.3, 6.7, 6.9, 6.3, 5.5, 5.3, 4.2, 2.9, 1.9, 1.0, 0.4]


def _dob(rng: Rng, on: dt.date) -> dt.date:
    band = rng.choices(range(len(_BAND_WEIGHTS)), weights=_BAND_WEIGHTS)[0]
    age_days = rng.randint(band * 5 * 365, (band * 5 + 5) * 365 - 1)
    return on - dt.timedelta(days=age_days)


def _postcode(rng: Rng) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return f"LS{rng.randint(1, 29)} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"


def _new_patient(rng: Rng, world: World, prac: Practice, key: int, number: int, used: set[str],
                 gps: list[Staff], reg_date: dt.date, dob: dt.date) -> Patient:
    sex = rng.choices("MFIU", weights=[49.4, 50.4, 0.1, 0.1])[0]
    female = sex == "F" or (sex in "IU" and rng.random() < 0.5)
    child = (reg_date - dob).days < 16 * 365
    return Patient(
        key=key,
        patient_guid=rng.guid(),
        person_guid=rng.guid(),
        org_guid=prac.org_guid,
        ods_code=prac.ods_code,
        nhs_number=rng.nhs_number(used),
        sex=sex,
        dob=dob,
        title=("Miss" if female else "Master") if child else ("Ms" if female else "Mr"),
        given=rng.choice(FEMALE_NAMES if female else MALE_NAMES),
        middle=rng.choice(["", "", "Anne", "James", "Marie", "Lee"]),
        surname=rng.choice(SURNAMES),
        postcode=_postcode(rng),
        house=str(rng.randint(1, 250)),
        street=rng.choice(STREETS),
        town=rng.choice(TOWNS),
        patient_number=number,
        reg_date=reg_date,
        reg_type="Temporary" if rng.random() < 0.02 else "Regular",
        usual_gp_guid=rng.choice(gps).user_in_role_guid if gps else None,
        dummy=rng.random() < 0.003,
        spine_sensitive=rng.random() < 0.002,
        confidential=rng.random() < 0.01,
    )


def build_world(
    *,
    seed: int = 42,
    practices: int = 1,
    patients_per_practice: int = 200,
    start: dt.date = dt.date(2026, 11, 1),
    days: int = 1,
    ods_codes: list[str] | None = None,
    agreement_guid: str | None = None,
    org_guids: dict[str, str] | None = None,
    supplier: str = "emis",
    years: float = 5.0,
    volume: float = 1.0,
    inactive_practices: int = 0,
    community_share: float = 0.05,
    casebook: bool = True,
) -> World:
    """Generate a deterministic world; the same arguments always give the same world.

    ``inactive_practices`` adds agreement members that are not activated (EMIS sends them in
    Agreements_SharingOrganisation only). ``community_share`` is the share of TPP patients who
    are also on a community service's list (their shared-care rows are not the GP's).
    ``casebook`` plants every QOF casebook case as a patient of every activated practice
    (:mod:`im1dev.synth.casebook`), so each delivery carries them through the real ingest.
    """
    rng = Rng(seed)
    agreement = agreement_guid or rng.guid()[1:-1]
    codes = list(ods_codes or [f"Z{90001 + i:05d}" for i in range(practices)])
    world = World(seed=seed, agreement_guid=agreement.upper(), start=start, days=days, practices=[],
                  years=years, volume=volume)
    for i in range(inactive_practices):
        codes.append(f"Z{98001 + i:05d}")
    for i, ods in enumerate(codes):
        world.practices.append(
            Practice(
                ods_code=ods,
                name=f"{rng.choice(TOWNS)} {rng.choice(['Medical Centre', 'Surgery', 'Health Centre'])} ({ods})",
                org_guid=(org_guids or {}).get(ods) or rng.guid(),
                location_guid=rng.guid(),
                ccg_guid=rng.guid(),
                cdb=10000 + i,
                postcode=_postcode(rng),
                open_date=dt.date(1990 + rng.randint(0, 20), 4, 1),
                supplier=supplier,
                activated=i < len(codes) - inactive_practices,
            )
        )
    used_nhs: set[str] = set()
    staff_key = 0
    key = 0
    end = world.end
    window_start = start - dt.timedelta(days=365 * world.population_window_years)
    for prac in world.practices:
        if not prac.activated:
            continue
        n_staff = max(5, round(patients_per_practice / 1400) + 4)
        role_names = [r[0] for r in ROLES]
        for j in range(n_staff):
            role = ROLES[j] if j < len(ROLES) else rng.choices(ROLES, weights=[r[4] for r in ROLES])[0]
            sex = rng.choice("MF")
            staff_key += 1
            world.staff.append(
                Staff(
                    key=staff_key,
                    user_in_role_guid=rng.guid(),
                    org_guid=prac.org_guid,
                    ods_code=prac.ods_code,
                    title="Dr" if role[0] == "GP" else rng.choice(["Mr", "Ms", "Mrs"]),
                    given=rng.choice(MALE_NAMES if sex == "M" else FEMALE_NAMES),
                    surname=rng.choice(SURNAMES),
                    role=role[0],
                    job_category_code=role[1],
                    job_category_name=role[2],
                    hcp_type=role[3],
                    contract_start=rng.date_between(dt.date(2000, 1, 1), dt.date(2020, 1, 1)),
                )
            )
        assert set(role_names) <= {s.role for s in world.staff if s.ods_code == prac.ods_code}
        gps = [s for s in world.staff if s.ods_code == prac.ods_code and s.role == "GP"]
        # the list on the bulk date, plus those who left or died within the population window
        n_current = patients_per_practice
        n_left = round(patients_per_practice * 0.06)
        # transfers in during the timeline: about 0.03% of the list per day (at least 0.3 a day)
        rate = max(0.3, patients_per_practice * 0.0003)
        joining_days = []
        for d in range(1, days):
            k = int(rate) + (rng.random() < rate - int(rate))
            joining_days += [d] * k
        number = 0
        for n in range(n_current + n_left + len(joining_days)):
            key += 1
            number += 1
            if n < n_current:
                dob = _dob(rng, start)
                reg_date = rng.date_between(max(dob, start - dt.timedelta(days=30 * 365)), start)
            elif n < n_current + n_left:
                dob = _dob(rng, start - dt.timedelta(days=400))
                reg_date = rng.date_between(max(dob, start - dt.timedelta(days=30 * 365)),
                                            start - dt.timedelta(days=60))
            else:  # transfers in during the timeline (GP2GP brings their history)
                reg_date = start + dt.timedelta(days=joining_days[n - n_current - n_left])
                dob = _dob(rng, reg_date)
            p = _new_patient(rng, world, prac, key, number, used_nhs, gps, reg_date, dob)
            if n_current <= n < n_current + n_left:
                # left or died before the bulk, within the population window
                left = rng.date_between(max(reg_date + dt.timedelta(days=1), window_start),
                                        start - dt.timedelta(days=1))
                if rng.random() < 0.3:
                    p.death_date = left
                p.dereg_date = p.dereg_entered = left
            elif n < n_current and days > 1 and rng.random() < 0.0008 * (days - 1):
                # leaves or dies during the timeline; the practice records it up to 3 days later
                left = start + dt.timedelta(days=rng.randint(1, days - 1))
                if left > p.reg_date:
                    if rng.random() < 0.35 and (start - p.dob).days > 60 * 365:
                        p.death_date = left
                    p.dereg_date = left
                    p.dereg_entered = min(end, left + dt.timedelta(days=rng.choice([0, 0, 1, 3])))
            if prac.supplier == "tpp" and rng.random() < community_share:
                p.community_org = world.community_org
            world.patients.append(p)
        if casebook:
            from im1dev.synth import casebook as book

            planted = book.plant(world, prac, first_key=key + 1, first_number=number + 1, used_nhs=used_nhs,
                                 usual_gp=gps[0].user_in_role_guid if gps else None)
            world.patients += planted
            key += len(planted)
    return world
