"""The QOF casebook: the rules, case by case, as written from the official texts.

``dbt_project/casebook/qof_*.yml`` holds the cases; ``sources.yml`` the documents they cite and
``codes.yml`` the code an event gets when a case names only its cluster. Each case is one patient
(date of birth, registrations, coded entries with dates and values, drug issues) and the expected
result on one reference date: in the QOF population or not (with age and REG_DAT), on each
register or not (and why), and per indicator numerator / denominator / excluded (and why).

The casebook is the single statement of what the rules mean, used three ways:

- :func:`unit_tests_yaml` compiles it into dbt unit tests of the models that apply each rule
  (``im1 casebook gen`` writes ``models/intermediate/qof/_qof__casebook_unit_tests.yml``);
- :func:`plant` adds every case as a real patient to every practice of a synthetic world, so the
  EMIS and SystmOne deliveries, the demo and the end-to-end tests carry each case through the real
  ingest, and :func:`check_marts` compares the warehouse's decisions with the expectations;
- ``tests/im1dev/synth/test_casebook_truth.py`` runs every case through :mod:`im1dev.synth.truth` (the
  ground truth must agree with the rule text, not with the SQL).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from im1 import paths

EXCLUSION_REASONS = {
    "max_tolerated_treatment", "unsuitable", "bp_declined", "care_declined", "invitations", "recent_diagnosis",
    "recent_registration", "fructosamine", "blood_test_declined",
}
REGISTER_REASONS = {"no_diagnosis", "no_first_or_new_episode", "before_2006", "no_treatment", "downstaged",
                    "resolved", "under_age"}
BP_SETTINGS = ("clinic", "oe", "home", "ambulatory")


def _yaml(text: str):
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


class CasebookError(ValueError):
    """A case that does not say what it means (unknown cluster, missing expectation, bad date)."""


def casebook_dir() -> Path:
    return paths.dbt_project_dir() / "casebook"


def seeds_dir() -> Path:
    return paths.dbt_project_dir() / "seeds"


# -- code lists -------------------------------------------------------------------------------------

@functools.cache
def clusters() -> dict[str, frozenset[str]]:
    """PCD cluster name -> codes, from the code-list seeds (the cluster named in each seed's meta)."""
    meta = _yaml((seeds_dir() / "codelists" / "_codelists__seeds.yml").read_text())
    out: dict[str, set[str]] = {}
    for seed in meta["seeds"]:
        cluster = str(seed.get("config", {}).get("meta", {}).get("cluster", ""))
        path = seeds_dir() / "codelists" / f"{seed['name']}.csv"
        if not cluster or not path.exists():
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            out.setdefault(cluster, set()).update(r["code"].strip() for r in csv.DictReader(fh) if r["code"].strip())
    return {k: frozenset(v) for k, v in out.items()}


@functools.cache
def clusters_of_code() -> dict[str, frozenset[str]]:
    by_code: dict[str, set[str]] = {}
    for cluster, codes in clusters().items():
        for c in codes:
            by_code.setdefault(c, set()).add(cluster)
    return {k: frozenset(v) for k, v in by_code.items()}


def _read_seed(name: str) -> list[dict]:
    with open(seeds_dir() / "rules" / f"{name}.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@functools.cache
def register_rules() -> dict[str, dict]:
    return {r["register"]: r for r in _read_seed("qof_register_rules")}


@functools.cache
def indicator_rules() -> dict[str, dict]:
    return {r["indicator"]: r for r in _read_seed("qof_indicator_rules")}


# -- the cases ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Registration:
    start: dt.date
    end: dt.date | None = None
    type: str = "Regular"


@dataclass(frozen=True)
class CaseEvent:
    """One dated entry of a case: a coded observation, or a drug issue (``kind``)."""

    date: dt.date
    code: str | None  # None: a member of a cluster whose codes are not loaded (unit tests only)
    clusters: frozenset[str]
    kind: str = "observation"  # observation | issue
    value: float | None = None
    episode: str | None = None
    reading: int | None = None  # blood pressure: the reading (systolic + diastolic) it belongs to
    quantity: float | None = None  # a drug issue's quantity (None: the catalogue drug's usual quantity)
    private: bool = False  # a drug issue on a private (not NHS) prescription


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    title: str
    source: str
    rule: str
    reference_date: dt.date
    born: dt.date
    sex: str = "F"
    died: dt.date | None = None
    dummy: bool = False
    registrations: tuple[Registration, ...] = ()
    events: tuple[CaseEvent, ...] = ()
    suppliers: tuple[str, ...] = ("emis", "tpp")
    ambiguous: str | None = None
    registers: dict[str, tuple[bool, str]] = field(default_factory=dict)  # register -> (on, reason)
    indicators: dict[str, tuple[str, str]] = field(default_factory=dict)  # indicator -> (status, reason)
    population: dict | None = None  # {"in": bool, "age": int, "registration_date": date}
    # PRGP (prgp_*.yml): {"counted": bool, "sex": MALE/FEMALE/None, "age": '0'..'94'/'95+', "band": '0-4'..}
    list_size: dict | None = None
    # prescribing: every row of mart_prescribing for a practice whose only patient is the case
    # (None: not stated; () : no row)
    prescribing: tuple[dict, ...] | None = None

    @property
    def citation(self) -> str:
        return f"{self.source} {self.rule}"

    @property
    def plantable(self) -> bool:
        """Every entry has a real code (a case using a cluster that is not loaded is a unit test only)."""
        return all(e.code is not None for e in self.events)

    @property
    def registered_gms(self) -> list[Registration]:
        return [r for r in self.registrations if r.type == "Regular"]

    def in_population(self) -> bool:
        """Registered for GMS on the reference date (the cases' own statement of it, for the generator)."""
        if self.dummy or (self.died is not None and self.died <= self.reference_date):
            return False
        return any(r.start <= self.reference_date and (r.end is None or r.end > self.reference_date)
                   for r in self.registered_gms)

    def registration_date(self) -> dt.date | None:
        active = [r.start for r in self.registered_gms
                  if r.start <= self.reference_date and (r.end is None or r.end > self.reference_date)]
        return max(active) if active else None

    def age(self, on: dt.date | None = None) -> int:
        on = on or self.reference_date
        return on.year - self.born.year - ((on.month, on.day) < (self.born.month, self.born.day))

    def shifted(self, years: int) -> Case:
        """The same case ``years`` later (every date moves by whole years; 29 February cannot)."""
        if years == 0:
            return self

        def mv(d: dt.date | None) -> dt.date | None:
            if d is None:
                return None
            if d.month == 2 and d.day == 29:
                raise CasebookError(f"{self.id}: a 29 February date cannot move by whole years")
            return d.replace(year=d.year + years)

        pop = dict(self.population) if self.population else None
        if pop and pop.get("registration_date"):
            pop["registration_date"] = mv(pop["registration_date"])
        rx = None if self.prescribing is None else tuple({**r, "issue_month": mv(r["issue_month"])}
                                                         for r in self.prescribing)
        return replace(
            self, reference_date=mv(self.reference_date), born=mv(self.born), died=mv(self.died),
            registrations=tuple(Registration(mv(r.start), mv(r.end), r.type) for r in self.registrations),
            events=tuple(replace(e, date=mv(e.date)) for e in self.events), population=pop, prescribing=rx)


@dataclass(frozen=True)
class Casebook:
    cases: tuple[Case, ...]
    sources: dict[str, dict]
    bp_codes: dict[str, tuple[str, str]]

    def by_id(self, case_id: str) -> Case:
        return next(c for c in self.cases if c.id == case_id)

    def for_supplier(self, supplier: str) -> list[Case]:
        return [c for c in self.cases if supplier in c.suppliers]


def _date(v, where: str) -> dt.date:
    if isinstance(v, dt.date):
        return v
    try:
        return dt.date.fromisoformat(str(v))
    except ValueError:
        raise CasebookError(f"{where}: {v!r} is not a date (YYYY-MM-DD)") from None


# the columns of mart_prescribing a prescribing case states for each row it expects
PRESCRIBING_COLUMNS = ("issue_month", "dmd_code", "drug", "bnf_chemical_code", "items", "quantity", "list_size",
                       "items_per_1000")


def _parse_prescribing(case_id: str, rows) -> tuple[dict, ...]:
    out = []
    for row in rows or ():
        if not isinstance(row, dict) or set(row) != set(PRESCRIBING_COLUMNS):
            raise CasebookError(f"{case_id}: prescribing: each row states exactly {list(PRESCRIBING_COLUMNS)}: {row!r}")
        month = _date(row["issue_month"], f"{case_id} prescribing")
        if month.day != 1:
            raise CasebookError(f"{case_id}: prescribing: issue_month is the first day of the month: {month}")
        out.append({**row, "issue_month": month,
                    **{k: (None if row[k] is None else str(row[k])) for k in ("dmd_code", "drug", "bnf_chemical_code")}})
    return tuple(out)


def _parse_expect(case_id: str, raw: dict) -> tuple[dict, dict, dict | None, dict | None, tuple | None]:
    registers: dict[str, tuple[bool, str]] = {}
    indicators: dict[str, tuple[str, str]] = {}
    population = None
    list_size = None
    prescribing = None
    for key, val in (raw or {}).items():
        if key == "prescribing":
            prescribing = _parse_prescribing(case_id, val)
            continue
        if key == "list_size":
            list_size = dict(val)
            if list_size.get("counted") is not True and list_size.get("counted") is not False:
                raise CasebookError(f"{case_id}: list_size.counted must be true or false")
            if list_size["counted"] and not {"sex", "age", "band"} <= set(list_size):
                raise CasebookError(f"{case_id}: a counted list_size case states sex (MALE/FEMALE/null), age and band")
            continue
        if key == "population":
            population = dict(val)
            if "registration_date" in population:
                population["registration_date"] = _date(population["registration_date"], f"{case_id} expect")
            continue
        if key in register_rules():
            text = "on" if val is True else str(val)  # YAML 1.1 reads a bare `on` as true
            if text == "on":
                registers[key] = (True, "on_register")
            elif text.startswith("off:") and text[4:] in REGISTER_REASONS:
                registers[key] = (False, text[4:])
            else:
                raise CasebookError(f"{case_id}: {key}: expected 'on' or 'off:<reason>' ({sorted(REGISTER_REASONS)}), "
                                    f"got {val!r}")
        elif key in indicator_rules():
            text = str(val)
            if text == "numerator":
                indicators[key] = ("numerator", "target_met")
            elif text == "denominator":
                indicators[key] = ("denominator", "target_not_met")
            elif text.startswith("excluded:") and text[9:] in EXCLUSION_REASONS:
                indicators[key] = ("excluded", text[9:])
            else:
                raise CasebookError(f"{case_id}: {key}: expected numerator, denominator or excluded:<reason> "
                                    f"({sorted(EXCLUSION_REASONS)}), got {val!r}")
        else:
            raise CasebookError(f"{case_id}: unknown expectation {key!r} (a register, an indicator, population, "
                                "list_size or prescribing)")
    return registers, indicators, population, list_size, prescribing


def _event(case_id: str, raw, defaults: dict, bp_codes: dict, reading: list[int], kind: str) -> list[CaseEvent]:
    where = f"{case_id} {kind}"
    if isinstance(raw, list):
        if len(raw) not in (2, 3):
            raise CasebookError(f"{where}: {raw!r}: write [date, CLUSTER] or [date, CLUSTER, value]")
        raw = {"date": raw[0], "cluster": raw[1], **({"value": raw[2]} if len(raw) == 3 else {})}
    day = _date(raw.get("date"), where)
    if "bp" in raw:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*", str(raw["bp"]))
        setting = raw.get("setting", "clinic")
        if not m or setting not in bp_codes:
            raise CasebookError(f"{where}: bp must be 'SYS/DIA' with setting one of {sorted(bp_codes)}: {raw!r}")
        reading[0] += 1
        sys_code, dia_code = bp_codes[setting]
        return [CaseEvent(day, c, clusters_of_code().get(c, frozenset()), value=float(v), reading=reading[0])
                for c, v in ((sys_code, m.group(1)), (dia_code, m.group(2)))]
    cluster = raw.get("cluster")
    code = raw.get("code")
    if code is not None:
        code = str(code)
        member_of = clusters_of_code().get(code)
        if not member_of and kind == "observation":
            raise CasebookError(f"{where}: code {code} is in no code list")
        if cluster and cluster not in (member_of or ()):
            raise CasebookError(f"{where}: code {code} is not a member of {cluster}")
        cl = member_of or frozenset()
    else:
        if cluster not in clusters() and cluster not in defaults:
            raise CasebookError(f"{where}: unknown cluster {cluster!r}")
        code = defaults.get(cluster)
        code = str(code) if code is not None else None
        if code is not None and cluster not in clusters_of_code().get(code, ()):
            raise CasebookError(f"{where}: the default code {code} of {cluster} is not in that cluster (codes.yml)")
        cl = clusters_of_code().get(code, frozenset()) if code else frozenset([cluster])
    value = raw.get("value")
    quantity = raw.get("quantity")
    return [CaseEvent(day, code, cl, kind=kind, value=None if value is None else float(value),
                      episode=raw.get("episode"), quantity=None if quantity is None else float(quantity),
                      private=bool(raw.get("private", False)))]


def load(folder: Path | None = None) -> Casebook:
    """Read and check every case; raises :class:`CasebookError` naming the case that is unclear.
    Read once per process (the files do not change while it runs)."""
    return _load(folder or casebook_dir())


@functools.cache
def _load(folder: Path) -> Casebook:
    sources = _yaml((folder / "sources.yml").read_text())["sources"]
    codes_doc = _yaml((folder / "codes.yml").read_text())
    defaults = codes_doc["defaults"]
    bp_codes = {k: (str(v[0]), str(v[1])) for k, v in codes_doc["blood_pressure"].items()}
    cases: list[Case] = []
    seen: set[str] = set()
    for path in sorted([*folder.glob("qof_*.yml"), *folder.glob("prgp_*.yml"), *folder.glob("rx_*.yml")]):
        doc = _yaml(path.read_text())
        area = doc["area"]
        default_ref = doc.get("reference_date")
        for raw in doc["cases"]:
            cid = raw["id"]
            if cid in seen:
                raise CasebookError(f"{path.name}: case id {cid} used twice")
            seen.add(cid)
            cite = raw.get("cite") or {}
            if cite.get("source") not in sources:
                raise CasebookError(f"{cid}: cite.source must be one of {sorted(sources)}")
            if not cite.get("rule"):
                raise CasebookError(f"{cid}: cite.rule (the rule, field or section) is missing")
            ref = _date(raw.get("reference_date", default_ref), f"{cid} reference_date")
            born = _date(raw["born"], f"{cid} born")
            if "registrations" in raw:
                regs = tuple(Registration(_date(r["from"], cid), _date(r["to"], cid) if r.get("to") else None,
                                          r.get("type", "Regular")) for r in raw["registrations"])
            else:
                regs = (Registration(_date(raw.get("registered", max(born, dt.date(2000, 1, 1))), cid)),)
            reading = [0]
            events: list[CaseEvent] = []
            for e in raw.get("events", []):
                events += _event(cid, e, defaults, bp_codes, reading, "observation")
            for e in raw.get("issues", []):
                events += _event(cid, e, defaults, bp_codes, reading, "issue")
            registers, indicators, population, list_size, prescribing = _parse_expect(cid, raw.get("expect"))
            case = Case(
                id=cid, area=area, title=" ".join(str(raw["title"]).split()), source=cite["source"],
                rule=cite["rule"], reference_date=ref, born=born, sex=raw.get("sex", "F"),
                died=_date(raw["died"], cid) if raw.get("died") else None, dummy=bool(raw.get("dummy", False)),
                registrations=regs, events=tuple(events), suppliers=tuple(raw.get("suppliers", ("emis", "tpp"))),
                ambiguous=" ".join(str(raw["ambiguous"]).split()) if raw.get("ambiguous") else None,
                registers=registers, indicators=indicators, population=population, list_size=list_size,
                prescribing=prescribing)
            _check(case)
            cases.append(case)
    return Casebook(tuple(cases), sources, bp_codes)


def _check(case: Case) -> None:
    """A case must state every result it touches, so its unit tests are complete."""
    if not (case.registers or case.indicators or case.population or case.list_size
            or case.prescribing is not None):
        raise CasebookError(f"{case.id}: expects nothing")
    clusters_used = set().union(*(e.clusters for e in case.events)) if case.events else set()
    for reg, rule in register_rules().items():
        if rule["diagnosis_cluster"] in clusters_used and reg not in case.registers:
            raise CasebookError(f"{case.id}: has a {rule['diagnosis_cluster']} entry but states nothing for {reg}")
    if (case.registers or case.indicators) and not case.in_population():
        raise CasebookError(f"{case.id}: states register or indicator results but is not in the QOF population")
    if case.indicators:
        for reg, (on, _reason) in case.registers.items():
            wanted = [i for i, r in indicator_rules().items() if r["register"] == reg]
            if on and wanted and not any(i in case.indicators for i in wanted):
                raise CasebookError(f"{case.id}: on {reg} and states indicators, but none of {wanted}")
    for ind in case.indicators:
        reg = indicator_rules()[ind]["register"]
        if not case.registers.get(reg, (False,))[0]:
            raise CasebookError(f"{case.id}: states {ind} but is not expected on {reg}")


# -- publication cases (publication.yml): counts in, what is published out ---------------------------

def publication_cases(folder: Path | None = None) -> list[dict]:
    """The small-number rule's cases: ``count``/``counts`` (and the exact ``total`` of them) or a
    ``numerator`` and ``denominator``, each with what is published; cites checked like the others."""
    folder = folder or casebook_dir()
    sources = _yaml((folder / "sources.yml").read_text())["sources"]
    doc = _yaml((folder / "publication.yml").read_text())
    out = []
    for raw in doc["cases"]:
        cite = raw.get("cite") or {}
        if cite.get("source") not in sources or not cite.get("rule"):
            raise CasebookError(f"{raw.get('id')}: cite.source must be one of {sorted(sources)}, with cite.rule")
        if not raw.get("expect"):
            raise CasebookError(f"{raw.get('id')}: expects nothing")
        out.append(raw)
    return out


# -- dbt unit tests -----------------------------------------------------------------------------------

CASEBOOK_UNIT_TESTS = Path("models") / "intermediate" / "qof" / "_qof__casebook_unit_tests.yml"
_UNIT_PRACTICE = "ZCB{:03d}"


def _qof_dates(ref: dt.date) -> dict:
    pped = dt.date(ref.year if ref.month <= 3 else ref.year + 1, 3, 31)
    return {"reference_date": ref.isoformat(), "reference_kind": "achievement" if (ref.month, ref.day) == (3, 31)
            else "month_end", "qof_year": f"{pped.year - 1}-{str(pped.year)[2:]}", "pped": pped.isoformat(),
            "qssd": dt.date(pped.year - 1, 4, 1).isoformat()}


def _supplier(case: Case) -> str:
    return "emis" if "emis" in case.suppliers else case.suppliers[0]


def _practices(cases: Iterable[Case]) -> dict[dt.date, str]:
    dates = sorted({c.reference_date for c in cases})
    return {d: _UNIT_PRACTICE.format(i + 1) for i, d in enumerate(dates)}


def _events_rows(case: Case, practice: str) -> list[dict]:
    rows = []
    for i, e in enumerate(case.events):
        for cl in sorted(e.clusters):
            rows.append({"supplier": _supplier(case), "practice_code": practice, "patient_id": case.id,
                         "event_id": f"{case.id}:{i}", "cluster": cl, "event_date": e.date.isoformat(),
                         "value": e.value, "episode": e.episode})
    return rows


def _population_row(case: Case, practice: str) -> dict:
    return {"supplier": _supplier(case), "practice_code": practice, "patient_id": case.id,
            **_qof_dates(case.reference_date), "age_years": case.age(),
            "registration_date": case.registration_date().isoformat()}


def _first_diagnosis(case: Case, register: str) -> str | None:
    cluster = register_rules()[register]["diagnosis_cluster"]
    days = [e.date for e in case.events if cluster in e.clusters and e.date <= case.reference_date]
    return min(days).isoformat() if days else None


def unit_tests() -> list[dict]:
    """The casebook as dbt unit tests: per area, one test of each model that applies its rules."""
    book = load()
    tests: list[dict] = []
    areas = sorted({c.area for c in book.cases})
    for area in areas:
        cases = [c for c in book.cases if c.area == area]
        pop_cases = [c for c in cases if c.population is not None]
        if pop_cases:
            practices = _practices(pop_cases)
            regs, pats, dates = [], [], []
            for d, prac in practices.items():
                dates.append({"supplier": "emis", "practice_code": prac, **_qof_dates(d)})
                dates.append({"supplier": "tpp", "practice_code": prac, **_qof_dates(d)})
            expect = []
            for c in pop_cases:
                prac = practices[c.reference_date]
                for r in c.registrations:
                    regs.append({"supplier": _supplier(c), "practice_code": prac, "patient_id": c.id,
                                 "registration_type": r.type, "start_date": r.start.isoformat(),
                                 "end_date": r.end.isoformat() if r.end else None})
                pats.append({"supplier": _supplier(c), "practice_code": prac, "patient_id": c.id,
                             "date_of_birth": c.born.isoformat(), "is_dummy": c.dummy,
                             "date_of_death": c.died.isoformat() if c.died else None})
                if c.population.get("in"):
                    expect.append({"supplier": _supplier(c), "practice_code": prac, "patient_id": c.id,
                                   "reference_date": c.reference_date.isoformat(), "age_years": c.population["age"],
                                   "registration_date": c.population["registration_date"].isoformat()})
            tests.append(_test(f"casebook_{_slug(area)}_population", "int_qof_population", pop_cases,
                               [("int_qof_reference_dates", dates), ("int_registrations", regs),
                                ("int_patients", pats)], expect))
        reg_cases = [c for c in cases if c.registers]
        if reg_cases:
            practices = _practices(reg_cases)
            population = [_population_row(c, practices[c.reference_date]) for c in reg_cases]
            events = [r for c in reg_cases for r in _events_rows(c, practices[c.reference_date])]
            expect = [{"supplier": _supplier(c), "practice_code": practices[c.reference_date], "patient_id": c.id,
                       "reference_date": c.reference_date.isoformat(), "register": reg, "register_status": reason,
                       "is_on_register": on}
                      for c in reg_cases for reg, (on, reason) in sorted(c.registers.items()) if reason != "no_diagnosis"]
            tests.append(_test(f"casebook_{_slug(area)}_registers", "int_qof_register_patients", reg_cases,
                               [("int_qof_population", population), ("int_qof_events", events)], expect))
        ind_cases = [c for c in cases if c.indicators]
        if ind_cases:
            practices = _practices(ind_cases)
            population = [_population_row(c, practices[c.reference_date]) for c in ind_cases]
            members = [{"supplier": _supplier(c), "practice_code": practices[c.reference_date], "patient_id": c.id,
                        "reference_date": c.reference_date.isoformat(), "register": reg, "is_on_register": True,
                        "first_diagnosis_date": _first_diagnosis(c, reg)}
                       for c in ind_cases for reg, (on, _r) in sorted(c.registers.items()) if on]
            events = [r for c in ind_cases for r in _events_rows(c, practices[c.reference_date])]
            expect = [{"supplier": _supplier(c), "practice_code": practices[c.reference_date], "patient_id": c.id,
                       "reference_date": c.reference_date.isoformat(), "indicator": ind, "status": status,
                       "reason": reason}
                      for c in ind_cases for ind, (status, reason) in sorted(c.indicators.items())]
            tests.append(_test(f"casebook_{_slug(area)}_indicators", "int_qof_indicator_patients", ind_cases,
                               [("int_qof_register_patients", members), ("int_qof_population", population),
                                ("int_qof_events", events)], expect))
        rx_cases = [c for c in cases if c.prescribing is not None]
        if rx_cases:
            tests.append(_prescribing_test(f"casebook_{_slug(area)}_mart", rx_cases))
    return tests


def _snapshot_dates(ref: dt.date) -> list[dt.date]:
    """The first-of-month list-size snapshots the marts hold on ``ref``: its month and the 12 before."""
    first = ref.replace(day=1)
    return [dt.date(first.year + (first.month - 1 - k) // 12, (first.month - 1 - k) % 12 + 1, 1) for k in range(13)]


def _prescribing_test(name: str, cases: list[Case]) -> dict:
    """mart_prescribing for one practice per case whose only patient is the case: its issues as
    int_medication_issues rows (the supplier's free-text name deliberately differs from the dm+d
    name), its reference date, and a list size of 1 on each first of the month it is registered."""
    from im1dev.synth import codes

    drugs = {d.dmd: d for d in codes.catalogue().drugs}
    issues, dates, lists, expect = [], [], [], []
    for n, c in enumerate(cases, 1):
        prac, sup = f"ZRX{n:03d}", _supplier(c)
        dates.append({"supplier": sup, "practice_code": prac, "reference_date": c.reference_date.isoformat()})
        for i, e in enumerate(x for x in c.events if x.kind == "issue"):
            drug = drugs.get(e.code)
            qty = e.quantity if e.quantity is not None else (drug.quantity if drug else None)
            qty = int(qty) if qty is not None and float(qty).is_integer() else qty
            issues.append({"supplier": sup, "practice_code": prac, "issue_id": f"{c.id}:{i}",
                           "issue_date": e.date.isoformat(), "issue_month": e.date.replace(day=1).isoformat(),
                           "dmd_code": e.code, "drug_name": f"supplier free text {i}", "quantity": qty,
                           "is_privately_prescribed": e.private})
        for day in _snapshot_dates(c.reference_date):
            if any(r.start <= day and (r.end is None or r.end > day) for r in c.registered_gms) \
                    and not c.dummy and c.born <= day and (c.died is None or c.died > day):
                lists.append({"practice_code": prac, "snapshot_date": day.isoformat(), "sex": "female",
                              "age_band": "40-44", "patients": 1})
        for r in c.prescribing:
            row = {"practice_code": prac, **{k: r[k] for k in PRESCRIBING_COLUMNS}}
            row["issue_month"] = r["issue_month"].isoformat()
            if row["items_per_1000"] is not None:  # numeric(2 decimals), compared as its text
                row["items_per_1000"] = f"{row['items_per_1000']:.2f}"
            expect.append(row)
    with open(seeds_dir() / "prescribing" / "dmd_bnf_map.csv", newline="", encoding="utf-8") as fh:
        seed = [{k: (v if v != "" else None) for k, v in r.items()} for r in csv.DictReader(fh)]
    return _test(name, "mart_prescribing", cases,
                 [("int_medication_issues", issues), ("int_reference_dates", dates), ("mart_list_size", lists),
                  ("dmd_bnf_map", seed)], expect)


def _slug(area: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", area.lower()).strip("_")


def _seed_rows(seed: str) -> list[dict]:
    """The rows of a rule seed as they are (empty cells null), so a unit test runs on the real rules."""
    return [{k: (v if v != "" else None) for k, v in r.items()} for r in _read_seed(seed)]


# the rule seeds each model reads: given with their real rows (the committed tests go stale when they change)
RULE_SEEDS = {
    "int_qof_register_patients": ("qof_register_rules",),
    "int_qof_indicator_patients": ("qof_indicator_rules", "qof_exclusion_reasons"),
}


def _test(name: str, model: str, cases: list[Case], given: list[tuple[str, list[dict]]], expect: list[dict]) -> dict:
    cited = "; ".join(f"{c.id}: {c.citation}" for c in cases)
    return {
        "name": name,
        "description": f"Casebook ({len(cases)} cases, one patient each, patient_id = case id): {cited}",
        "model": model,
        "given": [{"input": f"ref('{rel}')", "rows": rows} for rel, rows in given]
        + [{"input": f"ref('{seed}')", "rows": _seed_rows(seed)} for seed in RULE_SEEDS.get(model, ())],
        "expect": {"rows": expect},
    }


def unit_tests_yaml() -> str:
    header = ("# GENERATED by `im1 casebook gen` from dbt_project/casebook/qof_*.yml - do not edit by hand.\n"
              "# Every casebook case is a patient here (patient_id = case id); see casebook/README.md.\n")
    body = yaml.safe_dump({"version": 2, "unit_tests": unit_tests()}, sort_keys=False, width=200,
                          allow_unicode=True, default_flow_style=None)
    return header + body


def _generated() -> dict[Path, str]:
    return {CASEBOOK_UNIT_TESTS: unit_tests_yaml(), GPAD_UNIT_TESTS: gpad_unit_tests_yaml()}


def write_unit_tests() -> Path:
    """Write the compiled unit tests (QOF and GPAD); returns the QOF file's path."""
    for rel, text in _generated().items():
        (paths.dbt_project_dir() / rel).write_text(text)
    return paths.dbt_project_dir() / CASEBOOK_UNIT_TESTS


def stale() -> bool:
    """True when the committed unit tests differ from what the casebook compiles to."""
    for rel, text in _generated().items():
        path = paths.dbt_project_dir() / rel
        if not path.exists() or path.read_text() != text:
            return True
    return False


# -- the GPAD casebook (casebook/gpad_*.yml) ------------------------------------------------------------

GPAD_UNIT_TESTS = Path("models") / "intermediate" / "activity" / "_activity__casebook_unit_tests.yml"
GPAD_OUTCOMES = ("attended", "dna", "booked", "cancelled_patient", "cancelled_practice")
GPAD_SLOT_DEFAULTS = {"date": dt.date(2025, 5, 6), "booked": dt.date(2025, 5, 1), "outcome": "attended",
                      "mode": "Face to Face (Surgery)", "context": "Care Related Encounter", "role": "R0260"}
GPAD_EXPECT = ("gpad_status", "gpad_mode", "hcp_type", "lead_time_band")


@dataclass(frozen=True)
class GpadSlot:
    date: dt.date
    booked: dt.date
    outcome: str  # attended | dna | booked (no outcome recorded) | cancelled_patient | cancelled_practice
    mode: str  # a national mode
    context: str  # the national category's context type
    role: str  # the clinician's national job role code


@dataclass(frozen=True)
class GpadCase:
    """One booked slot and how GPAD counts it: ``expect`` is None when it is not counted, else
    (gpad_status, gpad_mode, hcp_type, lead_time_band)."""

    id: str
    title: str
    source: str
    rule: str
    slot: GpadSlot
    expect: tuple[str, str, str, str] | None
    suppliers: tuple[str, ...] = ("emis", "tpp")
    ambiguous: str | None = None

    @property
    def citation(self) -> str:
        return f"{self.source} {self.rule}"


def load_gpad(folder: Path | None = None) -> tuple[GpadCase, ...]:
    """Read and check every GPAD case (casebook/gpad_*.yml)."""
    return _load_gpad(folder or casebook_dir())


@functools.cache
def _load_gpad(folder: Path) -> tuple[GpadCase, ...]:
    from im1dev.synth.truth import GPAD_MODE

    sources = _yaml((folder / "sources.yml").read_text())["sources"]
    out: list[GpadCase] = []
    for path in sorted(folder.glob("gpad_*.yml")):
        for raw in _yaml(path.read_text())["cases"]:
            cid = raw["id"]
            if any(c.id == cid for c in out):
                raise CasebookError(f"{path.name}: case id {cid} used twice")
            cite = raw.get("cite") or {}
            if cite.get("source") not in sources or not cite.get("rule"):
                raise CasebookError(f"{cid}: cite needs a source of sources.yml and the rule")
            unknown = set(raw.get("slot") or {}) - set(GPAD_SLOT_DEFAULTS)
            if unknown:
                raise CasebookError(f"{cid}: unknown slot fields {sorted(unknown)}")
            sl = {**GPAD_SLOT_DEFAULTS, **(raw.get("slot") or {})}
            slot = GpadSlot(date=_date(sl["date"], cid), booked=_date(sl["booked"], cid), outcome=str(sl["outcome"]),
                            mode=str(sl["mode"]), context=str(sl["context"]), role=str(sl["role"]))
            if slot.outcome not in GPAD_OUTCOMES or slot.mode not in GPAD_MODE:
                raise CasebookError(f"{cid}: outcome must be one of {GPAD_OUTCOMES}, mode a national mode")
            exp = raw.get("expect") or {}
            if exp.get("counted") is True:
                if set(exp) != {"counted", *GPAD_EXPECT}:
                    raise CasebookError(f"{cid}: a counted slot states {list(GPAD_EXPECT)}")
                expect = tuple(str(exp[k]) for k in GPAD_EXPECT)
            elif exp == {"counted": False}:
                expect = None
            else:
                raise CasebookError(f"{cid}: expect counted: false, or counted: true with {list(GPAD_EXPECT)}")
            suppliers = tuple(raw.get("suppliers", ("emis", "tpp")))
            if "tpp" in suppliers and slot.context != "Care Related Encounter":
                raise CasebookError(f"{cid}: SystmOne's IM1 extract carries no context type: suppliers: [emis]")
            out.append(GpadCase(id=cid, title=" ".join(str(raw["title"]).split()), source=cite["source"],
                                rule=cite["rule"], slot=slot, expect=expect, suppliers=suppliers,
                                ambiguous=" ".join(str(raw["ambiguous"]).split()) if raw.get("ambiguous") else None))
    return tuple(out)


_GPAD_PRACTICE = "ZGP001"


def _gpad_given(cases: tuple[GpadCase, ...]) -> dict[str, list[dict]]:
    """Each case's slot as EMIS and as SystmOne send it, in the synthetic supplier's own labels
    (emis.SLOT_STATUS; tpp.APPOINTMENT_STATUS ids and APPOINTMENT_METHOD flags), at the staging
    models int_appointments reads. The clinician is one per case (its HCP type is checked by the
    roles test; here it is given as the case expects it)."""
    from im1dev.synth import emis, tpp

    slots, sessions, tpp_rows, flags, practitioners = [], [], [], [], []
    for n, c in enumerate(cases, 1):
        s = c.slot
        hcp = c.expect[2] if c.expect else "GP"
        if "emis" in c.suppliers:
            slots.append({"practice_code": _GPAD_PRACTICE, "slot_guid": c.id, "patient_guid": f"P{n}",
                          "session_guid": f"G{n}", "appointment_date": s.date.isoformat(),
                          "booked_date": s.booked.isoformat(), "slot_status": emis.SLOT_STATUS[s.outcome],
                          "did_not_attend": s.outcome == "dna", "mode_of_contact": s.mode, "context_type": s.context,
                          "is_deleted": False})
            sessions.append({"supplier": "emis", "practice_code": _GPAD_PRACTICE, "session_id": f"G{n}",
                             "practitioner_id": f"U{n}", "hcp_type": hcp})
        if "tpp" in c.suppliers:
            tpp_rows.append({"practice_code": _GPAD_PRACTICE, "row_identifier": n, "id_patient": n,
                             "id_profile_clinician": tpp.STAFF_PROFILE_OFFSET + n, "id_rota": n,
                             "appointment_status": tpp.APPOINTMENT_STATUS[s.outcome][0],
                             "telephone_appointment": s.mode == "Telephone/Audio",
                             "date_start": f"{s.date.isoformat()} 09:00:00", "date_end": f"{s.date.isoformat()} 09:10:00",
                             "date_appointment_booked": f"{s.booked.isoformat()} 08:00:00", "is_shared_care": False})
            if s.mode in tpp.APPOINTMENT_METHOD:
                flags.append({"practice_code": _GPAD_PRACTICE, "row_identifier": n, "id_appointment": n,
                              "flag": tpp.APPOINTMENT_METHOD[s.mode]})
            practitioners.append({"supplier": "tpp", "practice_code": _GPAD_PRACTICE,
                                  "practitioner_id": str(tpp.STAFF_PROFILE_OFFSET + n), "hcp_type": hcp})
    mapping = [{"practice_code": _GPAD_PRACTICE, "row_identifier": key, "mapping": label}
               for key, label in tpp.APPOINTMENT_STATUS.values()]
    return {"base_emis__appointment_slot": slots, "int_appointment_sessions": sessions,
            "stg_tpp__srappointment": tpp_rows, "stg_tpp__srappointmentflags": flags,
            "stg_tpp__srmapping": mapping, "int_practitioners": practitioners}


def gpad_unit_tests() -> list[dict]:
    """The GPAD casebook as dbt unit tests: ``casebook_gpad_appointments`` (int_appointments: every
    case's slot through EMIS and through SystmOne gives the case's GPAD row, the same for both) and
    ``casebook_gpad_roles`` (int_practitioners: the clinician's role, as EMIS and SystmOne send it,
    gives the case's HCP type)."""
    from im1dev.synth import tpp

    cases = load_gpad()
    if not cases:
        return []
    seeds = ("gpad_appointment_status_map", "gpad_appointment_mode_map", "gpad_context_type_map")
    tests = []
    # the counted slots state their GPAD row; the others only that GPAD does not count them (a unit
    # test compares every output row, so the two groups are two tests)
    for name, group in (("casebook_gpad_appointments", [c for c in cases if c.expect is not None]),
                        ("casebook_gpad_not_counted", [c for c in cases if c.expect is None])):
        if not group:
            continue
        given = _gpad_given(tuple(group))
        inputs = [("stg_tpp__gms_organisations", []), ("base_tpp__srappointment", []),
                  *((rel, given[rel]) for rel in ("base_emis__appointment_slot", "int_appointment_sessions",
                                                  "stg_tpp__srappointment", "stg_tpp__srappointmentflags",
                                                  "stg_tpp__srmapping", "int_practitioners"))]
        expect = []
        for n, c in enumerate(group, 1):
            for supplier in c.suppliers:
                row = {"supplier": supplier, "practice_code": _GPAD_PRACTICE,
                       "appointment_id": c.id if supplier == "emis" else str(n)}
                if c.expect is not None:
                    row.update(zip(GPAD_EXPECT, c.expect, strict=True))
                expect.append({**row, "is_gpad_counted": c.expect is not None})
        cited = "; ".join(f"{c.id}: {c.citation}" for c in group)
        what = ("each sent by EMIS and by SystmOne where it can be, the same GPAD row through both"
                if name == "casebook_gpad_appointments" else "slots GPAD does not count")
        tests.append({
            "name": name,
            "description": f"GPAD casebook ({len(group)} cases, {what}): {cited}",
            "model": "int_appointments",
            "overrides": {"macros": {"is_incremental": False}},
            "given": [{"input": f"ref('{rel}')", "rows": rows} for rel, rows in inputs]
            + [{"input": f"ref('{seed}')", "rows": _gpad_seed_rows(seed)} for seed in seeds],
            "expect": {"rows": expect},
        })
    # the clinician's role: EMIS sends the code, SystmOne the national name
    names = {r["role_code"]: r["role_name"] for r in _gpad_seed_rows("gpad_hcp_type_map")}
    roles = sorted({c.slot.role for c in cases})
    users = [{"user_in_role_guid": f"U-{code}", "organisation_guid": "O1", "job_category_code": code,
              "practice_code": _GPAD_PRACTICE} for code in roles]
    profiles = [{"practice_code": _GPAD_PRACTICE, "row_identifier": tpp.STAFF_PROFILE_OFFSET + i,
                 "staff_role": names.get(code, code)} for i, code in enumerate(roles, 1)]
    hcp = {c.slot.role: c.expect[2] for c in cases if c.expect is not None}
    role_expect = [{"supplier": "emis", "practitioner_id": f"U-{code}", "hcp_type": hcp[code]} for code in roles
                   if code in hcp]
    role_expect += [{"supplier": "tpp", "practitioner_id": str(tpp.STAFF_PROFILE_OFFSET + i), "hcp_type": hcp[code]}
                    for i, code in enumerate(roles, 1) if code in hcp]
    tests.append({
        "name": "casebook_gpad_roles",
        "description": "GPAD casebook: each case's clinician role (EMIS JobCategoryCode; SystmOne StaffRole, the "
                       "national role name) gives the case's HCP type: "
                       + "; ".join(f"{c.id}: {c.citation}" for c in cases if c.slot.role != "R0260"),
        "model": "int_practitioners",
        "given": [{"input": "ref('stg_emis__admin_userinrole')", "rows": users},
                  {"input": "ref('stg_emis__admin_organisation')",
                   "rows": [{"organisation_guid": "O1", "ods_code": _GPAD_PRACTICE}]},
                  {"input": "ref('stg_tpp__srstaffmemberprofile')", "rows": profiles},
                  {"input": "ref('gpad_hcp_type_map')", "rows": _gpad_seed_rows("gpad_hcp_type_map")}],
        "expect": {"rows": role_expect},
    })
    return tests


def _gpad_seed_rows(seed: str) -> list[dict]:
    with open(seeds_dir() / "gpad" / f"{seed}.csv", newline="", encoding="utf-8") as fh:
        return [{k: (v if v != "" else None) for k, v in r.items()} for r in csv.DictReader(fh)]


def gpad_unit_tests_yaml() -> str:
    header = ("# GENERATED by `im1 casebook gen` from dbt_project/casebook/gpad_*.yml - do not edit by hand.\n"
              "# Every GPAD casebook case is one slot here; see casebook/README.md.\n")
    body = yaml.safe_dump({"version": 2, "unit_tests": gpad_unit_tests()}, sort_keys=False, width=200,
                          allow_unicode=True, default_flow_style=None)
    return header + body


# -- planting cases into a synthetic world -----------------------------------------------------------

def achievement_shift(world_start: dt.date, case: Case) -> int:
    """Whole years to move ``case`` so its reference date is covered by a world whose bulk is
    dated ``world_start`` (the case's reference date must be on or before the bulk's data date)."""
    years = 0
    while case.reference_date.replace(year=case.reference_date.year + years) > world_start:
        years -= 1
    return years


def patient_guid(world_seed: int, ods: str, case_id: str) -> str:
    from im1dev.synth.world import guid_from_bits

    h = hashlib.blake2b(f"{world_seed}:casebook:{ods}:{case_id}".encode(), digest_size=16).digest()
    return guid_from_bits(int.from_bytes(h, "big"))


def plant(world, practice, *, first_key: int, first_number: int, used_nhs: set[str], usual_gp: str | None) -> list:
    """One patient per casebook case for ``practice`` (the cases of its supplier whose entries all
    have codes), each moved by whole years so its reference date is on or before the bulk's data
    date. Identities are derived from the world seed, the practice and the case id."""
    from im1dev.synth.world import Rng

    rng = Rng(f"{world.seed}:casebook:{practice.ods_code}")
    out = []
    for case in load().for_supplier(practice.supplier):
        if not case.plantable:
            continue
        try:
            case = case.shifted(achievement_shift(world.start, case))
        except CasebookError:
            continue  # a 29 February that cannot move (a unit-test-only case then)
        if max(r.start for r in case.registrations) > world.start:
            continue
        out.append(case_patient(world, practice, case, key=first_key + len(out),
                                number=first_number + len(out), nhs_number=rng.nhs_number(used_nhs),
                                usual_gp=usual_gp))
    return out


def case_patient(world, practice, case: Case, *, key: int, number: int, nhs_number: str, usual_gp: str | None):
    """The patient of ``case`` at ``practice``: EMIS holds only the latest registration, SystmOne all."""
    from im1dev.synth.world import Patient

    regs = sorted(case.registrations, key=lambda r: r.start)
    main = regs[-1] if practice.supplier == "emis" else regs[0]
    end = case.died or main.end
    return Patient(
        key=key, patient_guid=patient_guid(world.seed, practice.ods_code, case.id),
        person_guid=patient_guid(world.seed, practice.ods_code, "person:" + case.id), org_guid=practice.org_guid,
        ods_code=practice.ods_code, nhs_number=nhs_number, sex=case.sex, dob=case.born,
        title="Ms" if case.sex == "F" else "Mr", given="Case", middle="", surname=case.id.replace("-", " ").title(),
        postcode="LS1 1AA", house="1", street="High Street", town="Leeds", patient_number=number,
        reg_date=main.start, reg_type=main.type, usual_gp_guid=usual_gp, dereg_date=end, death_date=case.died,
        dummy=case.dummy, dereg_entered=end,
        extra_registrations=[(r.start, r.end) for r in regs if r is not main and r.type == "Regular"] or None,
        case=case.id,
    )


def planted_case(world, patient) -> Case:
    """The case behind a planted patient, moved to the world's timeline as :func:`plant` did."""
    case = load().by_id(patient.case)
    return case.shifted(achievement_shift(world.start, case))


def case_record(world, patient, staff):
    """The facts of a planted patient: the case's entries as coded observations and drug issues."""
    from im1dev.synth import codes
    from im1dev.synth.clinical import Authorisation, Event, HistoryRow, Issue, PatientRecord
    from im1dev.synth.world import guid_from_bits

    case = planted_case(world, patient)
    cat = codes.catalogue()
    drugs = {d.dmd: d for d in cat.drugs}
    rec = PatientRecord(patient=patient)
    who = next((s.key for s in staff if s.role == "GP"), staff[0].key if staff else 0)
    reg = patient.reg_date.toordinal()
    rec.history.append(HistoryRow(reg, "Registered", reg))
    if patient.dereg_date:
        rec.history.append(HistoryRow(patient.dereg_date.toordinal(), "Died" if patient.death_date else "Deducted",
                                      patient.dereg_date.toordinal()))
    seq = [patient.key * 1_000_000]

    def next_id() -> int:
        seq[0] += 1
        return seq[0]

    def guid(n: int) -> str:
        h = hashlib.blake2b(f"{world.seed}:{patient.ods_code}:{case.id}:{n}".encode(), digest_size=16).digest()
        return guid_from_bits(int.from_bytes(h, "big"))

    for e in case.events:
        day = e.date.toordinal()
        entered = max(day, reg)  # an entry older than the registration came with the record (GP2GP)
        n = next_id()
        if e.kind == "issue":
            drug = drugs.get(e.code)
            if drug is None:
                raise CasebookError(f"{case.id}: drug {e.code} is not in the synthetic catalogue (include/synth/drugs.csv)")
            auth = Authorisation(id=n, guid=guid(n), drug=drug, start=day, entered=entered, clinician=who,
                                 repeat=False, max_issues=1, end=day + drug.course_days,
                                 end_entered=max(day + drug.course_days, entered))
            rec.authorisations.append(auth)
            m = next_id()
            rec.issues.append(Issue(id=m, guid=guid(m), auth=auth.id, auth_guid=auth.guid, drug=drug, date=day,
                                    entered=entered, clinician=who, quantity=e.quantity, private=e.private))
            auth.issues.append(entered)
            continue
        unit = ("mmHg" if e.clusters & {"BP_SYS", "BP_DIA"} else "mmol/mol" if "IFCCHBAM_COD" in e.clusters
                else "umol/L" if "SERFRUC_COD" in e.clusters else "") if e.value is not None else ""
        # an entry of a cluster whose codes are not loaded carries the cluster in its tag (truth only)
        tag = "casebook" if e.code is not None else "cluster:" + next(iter(e.clusters))
        rec.events.append(Event(id=n, guid=guid(n), date=day, entered=entered, code=e.code, clinician=who,
                                value=e.value, unit=unit, tag=tag, episode=e.episode or "",
                                entered_time=9 * 3600 + (n % 3600)))
    return rec


# -- the warehouse's decisions for the planted cases -------------------------------------------------

@dataclass
class WarehouseCheck:
    """How the warehouse treated every planted case (see :func:`check_warehouse`)."""

    checked: dict[str, int] = field(default_factory=dict)  # supplier -> cases compared
    not_covered: list[str] = field(default_factory=list)  # cases whose reference date the marts do not hold
    # prescribing cases: a mart counts the whole practice, so they are proven by the reconcile of
    # their practice (truth.compute includes them) and by their unit tests, not here
    other_areas: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self) -> str:
        n = sum(self.checked.values())
        per = ", ".join(f"{k.upper()} {v}" for k, v in sorted(self.checked.items()))
        text = f"{n} casebook patients checked ({per})"
        if self.not_covered:
            text += f"; {len(self.not_covered)} not on a reference date the marts hold"
        return text + (": every expected answer matches" if self.ok else f": {len(self.mismatches)} MISMATCH")


def check_warehouse(conn, worlds) -> WarehouseCheck:
    """Compare the QOF decisions in the warehouse (int_qof_population, int_qof_register_patients,
    int_qof_indicator_patients; read with a role that may see the intermediate layer) with every
    planted case's expected answers, on the case's reference date."""
    out = WarehouseCheck()
    for world in worlds:
        planted = [p for p in world.patients if p.case is not None]
        for ods in sorted({p.ods_code for p in planted}):
            supplier = world.practice(ods).supplier
            pats = {(p.patient_guid if supplier == "emis" else str(p.key)): p for p in planted if p.ods_code == ods}
            ids = list(pats)
            dates = {r[0] for r in conn.execute(
                "select reference_date from intermediate.int_qof_reference_dates where practice_code = %s", (ods,))}
            pop = {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(
                "select patient_id, reference_date, age_years, registration_date from intermediate.int_qof_population "
                "where practice_code = %s and patient_id = any(%s)", (ods, ids))}
            regs: dict = {}
            for pid, day, reg, status, on in conn.execute(
                    "select patient_id, reference_date, register, register_status, is_on_register "
                    "from intermediate.int_qof_register_patients where practice_code = %s and patient_id = any(%s)",
                    (ods, ids)):
                regs.setdefault((pid, day), {})[reg] = (on, status)
            inds: dict = {}
            for pid, day, ind, status, reason in conn.execute(
                    "select patient_id, reference_date, indicator, status, reason from "
                    "intermediate.int_qof_indicator_patients where practice_code = %s and patient_id = any(%s)",
                    (ods, ids)):
                inds.setdefault((pid, day), {})[ind] = (status, reason)
            for pid, p in pats.items():
                case = planted_case(world, p)
                day = case.reference_date
                if not (case.population is not None or case.registers or case.indicators):
                    out.other_areas.append(case.id)
                    continue
                if day not in dates:
                    out.not_covered.append(case.id)
                    continue
                out.checked[supplier] = out.checked.get(supplier, 0) + 1
                where = f"{case.id} ({supplier.upper()} {ods}, {day}; {case.citation})"
                got_pop = pop.get((pid, day))
                if case.population is not None:
                    want = (case.population["age"], case.population["registration_date"]) if case.population["in"] \
                        else None
                    if got_pop != want:
                        out.mismatches.append(f"{where}: population want {want}, got {got_pop}")
                got_regs = regs.get((pid, day), {})
                for reg, (on, reason) in case.registers.items():
                    want = None if reason == "no_diagnosis" else (on, reason)
                    if got_regs.get(reg) != want:
                        out.mismatches.append(f"{where}: {reg} want {want}, got {got_regs.get(reg)}")
                got_inds = inds.get((pid, day), {})
                for ind, want in case.indicators.items():
                    if got_inds.get(ind) != want:
                        out.mismatches.append(f"{where}: {ind} want {want}, got {got_inds.get(ind)}")
    return out
