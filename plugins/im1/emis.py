"""EMIS (Optum) IM1 delivery conventions: file names, batches and completeness.

Two file-name generations are recognised (im1-formats.md section 2.2)::

    current (6 parts): {exportType}_{batchNumber}_{Schema}_{Table}_{yyyyMMddHHmmss}_{SharingAgreementGuid}.csv.gpg
    legacy  (5 parts): {ProcessingIds}_{Schema}_{Table}_{yyyyMMddHHmmss}_{SharingAgreementGuid}.csv.gpg

There is no manifest: a batch is every file sharing the same batch key and extract timestamp,
and it is complete when a file for every expected table of its schema version is present.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field

from im1 import specs

_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
CURRENT = re.compile(
    rf"^(?P<export>[A-Za-z][A-Za-z0-9]*)_(?P<batchno>\d+)_(?P<schema>[A-Za-z]+)_(?P<table>[A-Za-z]+)_"
    rf"(?P<ts>\d{{14}})_(?P<guid>{_GUID})\.csv(?P<gpg>\.gpg)?\Z"
)
LEGACY = re.compile(
    rf"^(?P<pids>\d+(?:-\d+)?)_(?P<schema>[A-Za-z]+)_(?P<table>[A-Za-z]+)_"
    rf"(?P<ts>\d{{14}})_(?P<guid>{_GUID})\.csv(?P<gpg>\.gpg)?\Z"
)


class FileNameError(ValueError):
    pass


@dataclass(frozen=True)
class EmisFileName:
    name: str
    style: str  # "current" | "legacy"
    batch_key: str  # "bulk_000001" (current) or "291-300" (legacy processing ids)
    table: str  # "CareRecord_Observation"
    extract_ts: dt.datetime
    agreement_guid: str  # upper case, no braces
    encrypted: bool
    export_type: str | None = None  # "bulk" / "delta" (current style only)

    @property
    def is_bulk(self) -> bool | None:
        if self.export_type is None:
            return None
        return self.export_type.lower().startswith("bulk")

    @property
    def plain_name(self) -> str:
        return self.name[:-4] if self.encrypted else self.name

    @property
    def batch_identity(self) -> tuple[str, dt.datetime]:
        return (self.batch_key, self.extract_ts)


def parse_name(name: str) -> EmisFileName:
    """Parse an EMIS extract file name (either generation); raises :class:`FileNameError`."""
    m = CURRENT.match(name)
    style = "current"
    if not m:
        m = LEGACY.match(name)
        style = "legacy"
    if not m:
        raise FileNameError(
            f"{name!r} is not an EMIS extract file name "
            "({exportType}_{batch}_{Schema}_{Table}_{yyyyMMddHHmmss}_{AgreementGuid}.csv.gpg)"
        )
    try:
        ts = dt.datetime.strptime(m["ts"], "%Y%m%d%H%M%S")
    except ValueError:
        raise FileNameError(f"{name!r}: {m['ts']!r} is not a valid yyyyMMddHHmmss timestamp") from None
    if style == "legacy":
        pids = m["pids"]
        if "-" in pids:
            a, b = (int(x) for x in pids.split("-"))
            if a > b:
                raise FileNameError(f"{name!r}: processing id range {pids} runs backwards")
        batch_key, export = pids, None
    else:
        batch_key, export = f"{m['export']}_{m['batchno']}", m["export"]
    return EmisFileName(
        name=name,
        style=style,
        batch_key=batch_key,
        table=f"{m['schema']}_{m['table']}",
        extract_ts=ts,
        agreement_guid=m["guid"].upper(),
        encrypted=bool(m["gpg"]),
        export_type=export,
    )


def format_name(
    table: str,
    extract_ts: dt.datetime,
    agreement_guid: str,
    *,
    export_type: str = "bulk",
    batch_number: int = 1,
    legacy_pids: str | None = None,
    encrypted: bool = True,
) -> str:
    ts = extract_ts.strftime("%Y%m%d%H%M%S")
    suffix = ".csv.gpg" if encrypted else ".csv"
    if legacy_pids is not None:
        return f"{legacy_pids}_{table}_{ts}_{agreement_guid.upper()}{suffix}"
    return f"{export_type}_{batch_number:06d}_{table}_{ts}_{agreement_guid.upper()}{suffix}"


@dataclass
class Batch:
    """Files that share a batch key and extract timestamp."""

    batch_key: str
    extract_ts: dt.datetime
    agreement_guid: str
    files: dict[str, object] = field(default_factory=dict)  # table -> remote file (any object)
    names: dict[str, EmisFileName] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Stable ledger key: batch key plus extract timestamp."""
        return f"{self.batch_key}@{self.extract_ts:%Y%m%d%H%M%S}"

    @property
    def tables(self) -> set[str]:
        return set(self.files)

    def missing_tables(self, version: str = specs.LATEST_EMIS_VERSION) -> list[str]:
        return sorted(set(specs.emis_expected_tables(version)) - self.tables)

    def unknown_tables(self) -> list[str]:
        return sorted(self.tables - set(specs.emis_tables()))

    def is_complete(self, version: str = specs.LATEST_EMIS_VERSION) -> bool:
        return not self.missing_tables(version)


def group_batches(items: list[tuple[str, object]], agreement_guid: str | None = None) -> tuple[list[Batch], list[str]]:
    """Group ``(file name, remote file)`` pairs into batches, oldest first.

    Returns the batches and the names that are not EMIS extract files (reported, never loaded).
    Files for another sharing agreement are reported as foreign too.
    """
    batches: dict[tuple[str, dt.datetime], Batch] = {}
    foreign: list[str] = []
    for name, obj in items:
        try:
            fn = parse_name(name)
        except FileNameError:
            foreign.append(name)
            continue
        if agreement_guid and fn.agreement_guid != agreement_guid.upper():
            foreign.append(name)
            continue
        b = batches.setdefault(fn.batch_identity, Batch(fn.batch_key, fn.extract_ts, fn.agreement_guid))
        if fn.table in b.files:
            b.duplicates.append(name)
            continue
        b.files[fn.table] = obj
        b.names[fn.table] = fn
    ordered = sorted(batches.values(), key=lambda b: (b.extract_ts, b.batch_key))
    return ordered, foreign


def tables_by_schema() -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for t in specs.emis_tables():
        out[t.split("_", 1)[0]].append(t)
    return dict(out)
