"""Extract specifications (EMIS v8.x and TPP SR files) loaded from ``include/specs``.

These drive everything that must track the standard: raw table DDL, header validation and
version detection, batch completeness, the synthetic supplier and generated dbt sources.
Columns are always mapped by header *name*, never by position.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from pathlib import Path

from im1 import paths

EMIS_VERSIONS = ("8.2", "8.0")
LATEST_EMIS_VERSION = "8.2"

# EMIS tables whose rows belong to the whole sharing agreement, not to one practice
# (im1-formats.md, pitfall 1): they are never split per organisation.
EMIS_SHARED_TABLES = frozenset(
    {
        "Admin_Location",
        "Admin_Organisation",
        "Admin_OrganisationLocation",
        "Admin_UserInRole",
        "Agreements_SharingOrganisation",
        "Coding_ClinicalCode",
        "Coding_DrugCode",
    }
)


# The key of a record in each EMIS table (im1-formats.md 2.9), always together with the
# organisation for per-practice tables (EMIS GUIDs are unique only within an organisation).
# None: an append-only log with no natural key (the whole row identifies it).
EMIS_KEYS: dict[str, tuple[str, ...] | None] = {
    "Admin_Location": ("LocationGuid",),
    "Admin_Organisation": ("OrganisationGuid",),
    "Admin_OrganisationLocation": ("OrganisationGuid", "LocationGuid"),
    "Admin_Patient": ("OrganisationGuid", "PatientGuid"),
    "Admin_PatientHistory": ("OrganisationGuid", "PatientGuid", "HistoryDate", "HistoryTime", "StatusDescription"),
    "Admin_UserInRole": ("UserInRoleGuid",),
    "Agreements_SharingOrganisation": ("OrganisationGuid",),
    "Appointment_Session": ("OrganisationGuid", "AppointmentSessionGuid"),
    "Appointment_SessionUser": ("SessionGuid", "UserInRoleGuid"),
    "Appointment_Slot": ("OrganisationGuid", "SlotGuid"),
    "Audit_PatientAudit": None,
    "Audit_RegistrationAudit": None,
    "CareRecord_Consultation": ("OrganisationGuid", "ConsultationGuid"),
    "CareRecord_Diary": ("OrganisationGuid", "DiaryGuid"),
    "CareRecord_Observation": ("OrganisationGuid", "ObservationGuid"),
    "CareRecord_ObservationReferral": ("OrganisationGuid", "ObservationGuid"),
    "CareRecord_Problem": ("OrganisationGuid", "ObservationGuid"),
    "Coding_ClinicalCode": ("CodeId", "ParentCodeID"),
    "Coding_DrugCode": ("CodeId",),
    "Prescribing_DrugRecord": ("OrganisationGuid", "DrugRecordGuid"),
    "Prescribing_IssueRecord": ("OrganisationGuid", "IssueRecordGuid"),
}
# TPP rows are keyed on the organisation they are visible to and their RowIdentifier (3.5).
TPP_KEY = ("IDOrganisationVisibleTo", "RowIdentifier")


# Known errors in the published specification (include/specs/emis_columns_notes.md): the
# effective type to validate against instead of the printed one.
EMIS_SPEC_ERRATA: dict[tuple[str, str], str] = {
    # "uniqueidentifier ... Link to Admin_UserInRole": a copy-and-paste error; it is a text status
    ("Admin_PatientHistory", "StatusDescription"): "varchar",
}


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    max_length: str
    nullable: bool | None
    table: str = ""

    @property
    def raw_name(self) -> str:
        return raw_column_name(self.name)

    @property
    def effective_type(self) -> str:
        """The type to validate values against (the spec's, unless it is a known erratum)."""
        return EMIS_SPEC_ERRATA.get((self.table, self.name), self.data_type)


@dataclass(frozen=True)
class EmisTable:
    name: str
    columns_by_version: dict[str, tuple[Column, ...]] = field(hash=False)

    @property
    def schema(self) -> str:
        return self.name.split("_", 1)[0]

    @property
    def raw_name(self) -> str:
        return raw_table_name(self.name)

    def columns(self, version: str = LATEST_EMIS_VERSION) -> tuple[Column, ...]:
        return self.columns_by_version[version]

    def column_names(self, version: str = LATEST_EMIS_VERSION) -> list[str]:
        return [c.name for c in self.columns(version)]

    def all_column_names(self) -> list[str]:
        """Union over versions, latest order first (for the raw table, which must hold any version)."""
        out: list[str] = []
        for v in EMIS_VERSIONS:
            for c in self.columns(v):
                if c.name not in out:
                    out.append(c.name)
        return out

    @property
    def has_deleted(self) -> bool:
        return "Deleted" in self.column_names()

    @property
    def has_processing_id(self) -> bool:
        return "ProcessingId" in self.column_names()

    @property
    def shared(self) -> bool:
        return self.name in EMIS_SHARED_TABLES

    @property
    def keys(self) -> tuple[str, ...]:
        return EMIS_KEYS.get(self.name, ())


def raw_table_name(table: str) -> str:
    return table.lower()


def raw_column_name(column: str) -> str:
    """Raw columns are the header name in lower case (reversible, and stable for unknown columns)."""
    return column.strip().lower()


@functools.cache
def emis_tables(spec_path: str | None = None) -> dict[str, EmisTable]:
    """All EMIS tables with their columns for each known spec version, from emis_columns.csv."""
    p = Path(spec_path) if spec_path else paths.specs_dir() / "emis_columns.csv"
    rows: dict[str, dict[str, list[Column]]] = {}
    with p.open(newline="", encoding="utf-8") as fh:
        pending: dict[str, list[tuple[str, dict]]] = {}
        for r in csv.DictReader(fh):
            pending.setdefault(r["table"], []).append((r["spec_version"], r))
    for table, entries in pending.items():
        v82: list[Column] = []
        v80: list[Column] = []
        i = 0
        while i < len(entries):
            ver, r = entries[i]
            assert ver == "8.2", f"unexpected row order in {p} at {table}.{r['column']}"
            col = Column(r["column"], r["data_type"], r["max_length"], _bool(r["nullable"]), table)
            v82.append(col)
            # an 8.0 override row may follow the 8.2 row
            if i + 1 < len(entries) and entries[i + 1][0] == "8.0" and entries[i + 1][1]["column"] == r["column"]:
                r80 = entries[i + 1][1]
                if r80["data_type"] != "(absent)":
                    v80.append(Column(r80["column"], r80["data_type"], r80["max_length"], _bool(r80["nullable"]),
                                      table))
                i += 2
            else:
                v80.append(col)
                i += 1
        rows[table] = {"8.2": v82, "8.0": v80}
    return {t: EmisTable(t, {v: tuple(cols) for v, cols in vs.items()}) for t, vs in rows.items()}


def emis_table(name: str) -> EmisTable:
    try:
        return emis_tables()[name]
    except KeyError:
        raise KeyError(f"{name!r} is not an EMIS extract table in the specification") from None


def emis_expected_tables(version: str = LATEST_EMIS_VERSION) -> list[str]:
    """Tables a complete batch holds for a spec version (v8.0 and later: all 21)."""
    return sorted(emis_tables())


def detect_emis_version(table: str, header: list[str]) -> str | None:
    """The newest spec version whose columns are all present in ``header`` (extra columns allowed)."""
    t = emis_table(table)
    present = {h.strip() for h in header}
    for v in EMIS_VERSIONS:
        if set(t.column_names(v)) <= present:
            return v
    return None


@dataclass(frozen=True)
class TppFile:
    name: str
    columns: tuple[str, ...]
    notes: dict[str, str] = field(hash=False, default_factory=dict)

    @property
    def raw_name(self) -> str:
        return raw_table_name(self.name)


@functools.cache
def tpp_files(spec_path: str | None = None) -> dict[str, TppFile]:
    p = Path(spec_path) if spec_path else paths.specs_dir() / "tpp_columns.csv"
    cols: dict[str, list[str]] = {}
    notes: dict[str, dict[str, str]] = {}
    with p.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            cols.setdefault(r["table"], [])
            notes.setdefault(r["table"], {})
            if r["column"]:
                cols[r["table"]].append(r["column"])
                notes[r["table"]][r["column"]] = r["notes"]
    return {t: TppFile(t, tuple(c), notes[t]) for t, c in cols.items()}


def _bool(s: str) -> bool | None:
    return {"true": True, "false": False}.get(s.strip().lower())
