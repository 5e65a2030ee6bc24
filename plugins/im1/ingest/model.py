"""The objects the ingest steps hand each other (discover -> fetch -> stage -> load -> quality).

Typed, and plain enough to travel through XCom: :meth:`to_dict` / :meth:`from_dict` round-trip
through JSON. The same shapes serve every delivery kind (EMIS organisation extract, EMIS
multi-organisation extract, SystmOne gateway); a field a kind does not use keeps its default.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields


class _Serialisable:
    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class PlannedFile(_Serialisable):
    """A file of a batch as it lies at the supplier."""

    table: str  # extract table, e.g. Admin_Patient, SRPatient (SRManifest for the TPP manifest)
    name: str  # file name
    remote_path: str  # where it lies (SFTP path, or a path in the gateway folder)
    size: int
    is_delta: bool | None = None  # TPP manifest's IsDelta (False = a full file); None: not said
    load: bool = True  # False: archived and recorded, not loaded
    note: str = ""  # why a file is not loaded


@dataclass
class PlannedBatch(_Serialisable):
    """A complete batch ready to fetch. ``batch_key`` is its key in the ledger (EMIS
    ``<batch>@<yyyyMMddHHmmss>``; TPP the batch folder under the gateway)."""

    batch_key: str
    extract_ts: str  # ISO
    files: list[PlannedFile] = field(default_factory=list)
    extract_from: str | None = None  # ISO: TPP DateExtractFrom of the delta files
    expected_version: str | None = None  # EMIS spec version the batch is expected in
    is_bulk: bool | None = None
    error: str | None = None  # cannot be trusted as delivered: quarantined after it is archived
    duplicate_of: str | None = None  # a re-delivery of this batch: quarantined after it is archived
    # supplier-side notes the fetch records as warnings: (what, [names])
    notes: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def ts(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.extract_ts)

    @classmethod
    def from_dict(cls, d: dict) -> PlannedBatch:
        b = super().from_dict(d)
        b.files = [f if isinstance(f, PlannedFile) else PlannedFile.from_dict(f) for f in b.files]
        b.notes = [(what, list(names)) for what, names in b.notes]
        return b


@dataclass
class Incomplete(_Serialisable):
    """A batch still missing files; ``what`` says what in the supplier's terms."""

    batch_key: str
    extract_ts: str
    missing: list[str]
    what: str
    expected_version: str | None = None


@dataclass
class Discovery(_Serialisable):
    ready: list[PlannedBatch] = field(default_factory=list)
    incomplete: list[Incomplete] = field(default_factory=list)
    foreign_files: list[str] = field(default_factory=list)  # not extracts of this feed (ignored)
    already_loaded: list[str] = field(default_factory=list)  # every organisation loaded or quarantined
    after_interval: list[str] = field(default_factory=list)  # belong to a later run

    @classmethod
    def from_dict(cls, d: dict) -> Discovery:
        out = super().from_dict(d)
        out.ready = [PlannedBatch.from_dict(b) if isinstance(b, dict) else b for b in out.ready]
        out.incomplete = [Incomplete.from_dict(b) if isinstance(b, dict) else b for b in out.incomplete]
        return out


@dataclass
class FetchedFile(_Serialisable):
    """A file as archived: its original lies at ``archive_path`` with this checksum."""

    table: str
    name: str
    archive_path: str
    sha256: str
    remote_path: str
    is_delta: bool | None = None
    load: bool = True


@dataclass
class FetchedBatch(_Serialisable):
    """A batch archived and registered: ``batch_ids`` maps each ledger organisation to its row."""

    batch_key: str
    extract_ts: str
    batch_ids: dict[str, int]
    files: list[FetchedFile] = field(default_factory=list)
    extract_from: str | None = None
    expected_version: str | None = None
    error: str | None = None  # why this run's fetch quarantined it (TPP manifest, re-delivery)

    @classmethod
    def from_dict(cls, d: dict) -> FetchedBatch:
        b = super().from_dict(d)
        b.files = [f if isinstance(f, FetchedFile) else FetchedFile.from_dict(f) for f in b.files]
        b.batch_ids = {k: int(v) for k, v in b.batch_ids.items()}
        return b

    @property
    def loadable(self) -> list[FetchedFile]:
        # in table order: loads lock raw tables in this order, so two loads never deadlock
        return sorted((f for f in self.files if f.load), key=lambda f: (f.table, f.name))


@dataclass
class LoadResult(_Serialisable):
    batch_id: int
    ods_code: str
    rows: int = 0
    status: str = "loaded"
    skipped: bool = False
    late: bool = False
    seconds: float = 0.0
