"""TPP SystmOne (SR extract) delivery conventions: batch folders, ``SRManifest.csv`` and completeness.

A batch is a folder in the gateway (named after the extract time, ``yyyyMMdd_HHmm``) holding
``SR<Name>.csv`` files in Windows-1252 and ``SRManifest.csv`` (im1-formats.md section 3):

* the manifest is written last: a folder without it is still arriving;
* it has five columns (``FileName``, ``IsDelta``, ``IsReference``, ``DateExtractFrom``,
  ``DateExtractTo``), one row per file (name without ``.csv``), no row counts;
* ``IsDelta`` is ``Y`` (changes since ``DateExtractFrom``) or ``N`` (a full file, superseding
  what was delivered before for that table); anything else is an error;
* ``DateExtractTo`` (the extract cut-off, the batch's data time) is the same on every dated row;
  some rows (SRAppointmentAttendees, SRReferralContactEvent) carry no dates at all;
* ``SRMapping`` and ``SRMappingGroup`` come without a manifest row.

Nothing here does I/O: the ingest pipeline lists folders and reads the manifest's bytes.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
from dataclasses import dataclass

MANIFEST = "SRManifest.csv"
MANIFEST_TABLE = "SRManifest"
MANIFEST_COLUMNS = ("FileName", "IsDelta", "IsReference", "DateExtractFrom", "DateExtractTo")
# files TPP sends without listing them in the manifest (im1-formats.md 3.2)
UNLISTED = frozenset({"SRMapping", "SRMappingGroup"})
ENCODING = "cp1252"
STAMP = re.compile(r"^(\d{8})_(\d{4})\Z")
FILE = re.compile(r"^SR[A-Za-z0-9]+\.csv\Z")


class ManifestError(ValueError):
    """SRManifest.csv cannot be trusted as delivered (the batch is quarantined with this reason)."""


def parse_stamp(text: str) -> dt.datetime:
    """``yyyyMMdd_HHmm`` (manifest dates and batch folder names) as a naive local date-time."""
    m = STAMP.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a yyyyMMdd_HHmm time")
    return dt.datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M")


def folder_time(name: str) -> dt.datetime | None:
    """The time a batch folder's name stands for (``yyyyMMdd_HHmm``), if it is such a name."""
    try:
        return parse_stamp(name)
    except ValueError:
        return None


def table_of(file_name: str) -> str:
    """``SRPatient.csv`` -> ``SRPatient``."""
    return file_name[:-4] if file_name.lower().endswith(".csv") else file_name


@dataclass(frozen=True)
class ManifestRow:
    table: str  # FileName without .csv, e.g. SRPatient
    is_delta: bool
    is_reference: str
    date_from: dt.datetime | None
    date_to: dt.datetime | None


@dataclass(frozen=True)
class Manifest:
    rows: tuple[ManifestRow, ...]

    @property
    def tables(self) -> list[str]:
        return [r.table for r in self.rows]

    @property
    def extract_to(self) -> dt.datetime | None:
        """The batch's cut-off (DateExtractTo; the same on every dated row)."""
        return next((r.date_to for r in self.rows if r.date_to), None)

    @property
    def extract_from(self) -> dt.datetime | None:
        """The earliest DateExtractFrom of the delta files (None for a batch of full files)."""
        froms = [r.date_from for r in self.rows if r.date_from]
        return min(froms) if froms else None

    def row(self, table: str) -> ManifestRow | None:
        return next((r for r in self.rows if r.table == table), None)


def parse_manifest(data: bytes, name: str = MANIFEST) -> Manifest:
    """Parse SRManifest.csv strictly (Windows-1252, RFC 4180, columns by header name).

    Raises :class:`ManifestError` naming the row and the problem: a missing column, a file listed
    twice, an ``IsDelta`` other than Y/N, a date that is not ``yyyyMMdd_HHmm``, or rows that
    disagree on ``DateExtractTo``.
    """
    try:
        text = codecs.decode(data, ENCODING, errors="strict")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{name}: not valid Windows-1252 at byte {err.start}") from None
    if text.startswith("\ufeff") or text.startswith("ï»¿"):
        text = text.lstrip("\ufeff").removeprefix("ï»¿")
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as err:
        raise ManifestError(f"{name}: not valid CSV: {err}") from None
    if not records or not any(c.strip() for c in records[0]):
        raise ManifestError(f"{name}: empty (no header row)")
    header = [c.strip() for c in records[0]]
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        raise ManifestError(f"{name}: column(s) {', '.join(missing)} missing from the header {header}")
    at = {c: header.index(c) for c in MANIFEST_COLUMNS}
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    for i, rec in enumerate(records[1:], start=2):
        if not rec or all(not c.strip() for c in rec):
            continue  # a blank line at the end
        if len(rec) != len(header):
            raise ManifestError(f"{name} line {i}: {len(rec)} field(s) but the header has {len(header)}")
        v = {c: rec[at[c]].strip() for c in MANIFEST_COLUMNS}
        table = table_of(v["FileName"])
        if not table:
            raise ManifestError(f"{name} line {i}: FileName is empty")
        if table in seen:
            raise ManifestError(f"{name} line {i}: {table} is listed twice")
        seen.add(table)
        flag = v["IsDelta"].upper()
        if flag not in ("Y", "N"):
            raise ManifestError(f"{name} line {i}: IsDelta of {table} is {v['IsDelta']!r}, expected Y or N")
        dates = {}
        for col in ("DateExtractFrom", "DateExtractTo"):
            try:
                dates[col] = parse_stamp(v[col]) if v[col] else None
            except ValueError:
                raise ManifestError(f"{name} line {i}: {col} of {table} is {v[col]!r}, "
                                    "expected yyyyMMdd_HHmm") from None
        rows.append(ManifestRow(table, flag == "Y", v["IsReference"], dates["DateExtractFrom"],
                                dates["DateExtractTo"]))
    ends = sorted({r.date_to for r in rows if r.date_to})
    if len(ends) > 1:
        raise ManifestError(f"{name}: rows disagree on DateExtractTo ("
                            + ", ".join(f"{e:%Y%m%d_%H%M}" for e in ends) + ")")
    return Manifest(tuple(rows))
