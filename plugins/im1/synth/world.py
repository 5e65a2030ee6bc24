"""The simulated population behind every synthetic delivery.

A :class:`World` is generated from a seed: organisations, staff and patients with their
registrations, deaths and leavings over a timeline. Deliveries (EMIS, TPP) are *views* of the
world on a date, and the ground truth is computed from the world directly, never from the files.
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
            "Patel", "Khan", "Nowak", "Müller", "García", "Ní Bhriain", "Kowalczyk", "Ahmed", "Dubois", "Ó Súilleabháin",
            "Roberts", "Walker", "Wright", "Robinson", "Thompson", "White", "Hughes", "Edwards", "Green", "Hall"]
TOWNS = ["Leeds", "Bradford", "York", "Harrogate", "Wakefield", "Halifax", "Huddersfield", "Selby"]
STREETS = ["High Street", "Station Road", "Church Lane", "Mill Road", "Park Avenue", "Victoria Street"]


def braced(u: uuid.UUID) -> str:
    return "{" + str(u).upper() + "}"


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
    activated: bool = True  # an agreement member that is not activated sends no data


@dataclass
class Staff:
    user_in_role_guid: str
    org_guid: str
    title: str
    given: str
    surname: str
    job_category_code: str
    job_category_name: str
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


@dataclass
class World:
    seed: int
    agreement_guid: str  # upper case, no braces (as in file names)
    start: dt.date  # date of the bulk extract
    days: int
    practices: list[Practice]
    staff: list[Staff] = field(default_factory=list)
    patients: list[Patient] = field(default_factory=list)

    def practice(self, ods: str) -> Practice:
        return next(p for p in self.practices if p.ods_code == ods)

    def extract_dates(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range(self.days)]


class _Rng(random.Random):
    def guid(self) -> str:
        return braced(uuid.UUID(int=self.getrandbits(128), version=4))

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


def _dob(rng: _Rng, on: dt.date) -> dt.date:
    band = rng.choices(range(len(_BAND_WEIGHTS)), weights=_BAND_WEIGHTS)[0]
    age_days = rng.randint(band * 5 * 365, (band * 5 + 5) * 365 - 1)
    return on - dt.timedelta(days=age_days)


def build_world(
    *,
    seed: int = 42,
    practices: int = 1,
    patients_per_practice: int = 200,
    start: dt.date = dt.date(2026, 11, 2),
    days: int = 1,
    ods_codes: list[str] | None = None,
    agreement_guid: str | None = None,
    org_guids: dict[str, str] | None = None,
) -> World:
    """Generate a deterministic world; the same arguments always give the same world."""
    rng = _Rng(seed)
    agreement = agreement_guid or rng.guid()[1:-1]
    codes = ods_codes or [f"Z{90001 + i:05d}" for i in range(practices)]
    world = World(seed=seed, agreement_guid=agreement.upper(), start=start, days=days, practices=[])
    for i, ods in enumerate(codes):
        world.practices.append(
            Practice(
                ods_code=ods,
                name=f"{rng.choice(TOWNS)} {rng.choice(['Medical Centre', 'Surgery', 'Health Centre'])} ({ods})",
                org_guid=(org_guids or {}).get(ods) or rng.guid(),
                location_guid=rng.guid(),
                ccg_guid=rng.guid(),
                cdb=10000 + i,
                postcode=f"LS{rng.randint(1, 29)} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
                f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}",
                open_date=dt.date(1990 + rng.randint(0, 20), 4, 1),
            )
        )
    used_nhs: set[str] = set()
    key = 0
    for prac in world.practices:
        gps = []
        for _ in range(max(2, patients_per_practice // 1500 + 2)):
            sex = rng.choice("MF")
            s = Staff(
                user_in_role_guid=rng.guid(),
                org_guid=prac.org_guid,
                title="Dr",
                given=rng.choice(MALE_NAMES if sex == "M" else FEMALE_NAMES),
                surname=rng.choice(SURNAMES),
                job_category_code="R0260",
                job_category_name="General Medical Practitioner",
                contract_start=rng.date_between(dt.date(2000, 1, 1), dt.date(2020, 1, 1)),
            )
            gps.append(s)
            world.staff.append(s)
        for n in range(patients_per_practice):
            key += 1
            sex = rng.choices("MFIU", weights=[49.4, 50.4, 0.1, 0.1])[0]
            dob = _dob(rng, start)
            earliest = max(dob, start - dt.timedelta(days=30 * 365))
            reg_date = rng.date_between(earliest, start - dt.timedelta(days=1))
            female = sex == "F" or (sex in "IU" and rng.random() < 0.5)
            p = Patient(
                key=key,
                patient_guid=rng.guid(),
                person_guid=rng.guid(),
                org_guid=prac.org_guid,
                ods_code=prac.ods_code,
                nhs_number=rng.nhs_number(used_nhs),
                sex=sex,
                dob=dob,
                title=("Miss" if female else "Master") if (start - dob).days < 16 * 365 else ("Ms" if female else "Mr"),
                given=rng.choice(FEMALE_NAMES if female else MALE_NAMES),
                middle=rng.choice(["", "", "Anne", "James", "Marie", "Lee"]),
                surname=rng.choice(SURNAMES),
                postcode=f"LS{rng.randint(1, 29)} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
                f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}",
                house=str(rng.randint(1, 250)),
                street=rng.choice(STREETS),
                town=rng.choice(TOWNS),
                patient_number=n + 1,
                reg_date=reg_date,
                reg_type="Temporary" if rng.random() < 0.02 else "Regular",
                usual_gp_guid=rng.choice(gps).user_in_role_guid,
                dummy=rng.random() < 0.003,
                spine_sensitive=rng.random() < 0.002,
                confidential=rng.random() < 0.01,
            )
            # some have left or died before the bulk (still in the extract within the population window)
            r = rng.random()
            if r < 0.04:
                p.dereg_date = rng.date_between(reg_date, start - dt.timedelta(days=1))
            elif r < 0.055:
                p.death_date = rng.date_between(reg_date, start - dt.timedelta(days=1))
                p.dereg_date = p.death_date
            world.patients.append(p)
    return world
