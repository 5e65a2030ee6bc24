"""TPP SystmOne ingest steps: discover batch folders in the gateway, fetch (archive) them, load them.

The steps mirror the EMIS ones (:mod:`im1.ingest.emis_pipeline`) and share its ledger, failure
handling and quarantine rules; what differs is the delivery (im1-formats.md section 3):

* **Discover.** The gateway is a local folder (``kind: folder``) or an SFTP site (``kind: sftp``,
  pinned host key). Every folder under it holding ``SR*.csv`` files is a batch; its key in the
  ledger is the folder's path under the gateway (e.g. ``20261102_0315``) and its extract time the
  manifest's ``DateExtractTo`` (the folder name's time when the manifest has none). A batch is
  complete when ``SRManifest.csv`` is there (TPP writes it last) and every file it names is
  present; until then it is *incomplete* and the DAG's sensor waits for it, then quarantines it
  at the deadline naming what is missing. A second folder with the same ``DateExtractTo`` as a
  loaded batch is a re-delivery: quarantined as a duplicate (releasing it loads it anyway).
* **Fetch.** Every file (the manifest too) is copied into the archive
  (``<state>/archive/<feed>/<batch>/``, owner-only: TPP files are plaintext) with its checksum
  and size, and recorded in ``ingest.files`` with the manifest's ``IsDelta`` (``is_delta``;
  false = a full file, which supersedes that table's earlier rows in staging). A manifest that
  cannot be trusted (not Y/N, disagreeing dates, ...) quarantines the batch after archiving it.
* **Load.** Per organisation, in one transaction: each archived file is decoded from
  Windows-1252 to UTF-8 as it streams into ``COPY`` (:class:`im1.ingest.load.Cp1252Reader`,
  strict: an undefined byte or a stray quote quarantines the batch), columns mapped by header
  name; a file without ``RowIdentifier`` (or without ``IDOrganisationVisibleTo`` where the spec
  has it) quarantines the batch; unknown columns are kept and reported. Batches are applied in
  extract order; an older batch arriving after a newer one is loaded and flagged ``is_late``.

Files the manifest lists but the specification has no column list for (SRAppointmentAttendees)
or does not know at all are archived and recorded (status ``not_loaded``), never silently dropped.
TPP feeds are organisation extracts (one practice per feed); see :mod:`im1.config`.

Each step takes and returns plain, JSON-serialisable values (the Airflow tasks pass them on).
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from im1 import paths, specs, tpp
from im1.config import Feed
from im1.ingest import ledger
from im1.ingest.emis_pipeline import (
    QUARANTINE_ERRORS,
    Discovery,
    QuarantineError,
    archive_dir,
    batch_done,
    copy_error,
    record_failure,
    sha256_of,
)
from im1.ingest.load import (
    Cp1252Reader,
    FileFormatError,
    HeaderError,
    StagedFile,
    copy_stream,
    parse_header,
    read_head,
    set_load_context,
)
from im1.transport.sftp import RemoteFile
from im1.warehouse.bootstrap import RAW_SCHEMAS

log = logging.getLogger(__name__)

NOT_LOADED = "not_loaded"


@dataclass
class PlannedFile:
    table: str  # SRPatient (SRManifest for the manifest itself)
    name: str  # SRPatient.csv
    remote_path: str
    size: int
    is_delta: bool | None  # the manifest's IsDelta; None when the manifest does not list the file
    load: bool = True  # False: archived and recorded only
    note: str = ""  # why a file is not loaded


@dataclass
class PlannedBatch:
    batch_key: str  # the batch folder under the gateway root, e.g. "20261102_0315"
    folder: str  # remote path of the folder
    extract_ts: str  # ISO: the manifest's DateExtractTo (the folder name's time if it has none)
    extract_from: str | None  # ISO: earliest DateExtractFrom of the delta files
    files: list[PlannedFile] = field(default_factory=list)
    error: str | None = None  # the manifest cannot be trusted: the batch is quarantined at fetch
    duplicate_of: str | None = None  # a re-delivery of this (loaded or ready) batch: quarantined at fetch
    unknown_tables: list[str] = field(default_factory=list)  # listed, but not in the TPP specification
    extra_files: list[str] = field(default_factory=list)  # in the folder, not in the manifest (ignored)

    @classmethod
    def from_dict(cls, d: dict) -> PlannedBatch:
        return cls(**{**d, "files": [PlannedFile(**f) for f in d["files"]]})


def gateway_root(feed: Feed) -> str:
    """The feed's gateway folder as the transport client names it (a remote or a local path)."""
    if feed.transport.kind == "folder":
        return feed.transport.resolved().as_posix()
    return feed.transport.path


def _spec_columns(table: str) -> tuple[str, ...] | None:
    """The spec's columns of a TPP file (empty: known file, no column list; None: unknown file)."""
    f = specs.tpp_files().get(table)
    return None if f is None else f.columns


def required_columns(table: str) -> list[str]:
    """Header columns a file cannot be loaded without: the row key of the TPP file (3.5)."""
    cols = _spec_columns(table) or ()
    return [c for c in specs.TPP_KEY if c in cols]


def _folder_ts(folder: str, items: list[RemoteFile]) -> dt.datetime:
    return tpp.folder_time(posixpath.basename(folder)) or dt.datetime.fromtimestamp(max(r.mtime for r in items))


def _plan_files(manifest: tpp.Manifest, names: dict[str, RemoteFile]) -> tuple[list[PlannedFile], list[str],
                                                                               list[str]]:
    files: list[PlannedFile] = []
    unknown: list[str] = []
    by_lower = {n.lower(): r for n, r in names.items()}
    listed = set()
    for row in manifest.rows:
        r = by_lower[f"{row.table}.csv".lower()]
        listed.add(r.name)
        cols = _spec_columns(row.table)
        if cols is None:
            unknown.append(row.table)
            files.append(PlannedFile(row.table, r.name, r.path, r.size, row.is_delta, load=False,
                                     note="not in the TPP specification: archived, not loaded"))
        elif not cols:
            files.append(PlannedFile(row.table, r.name, r.path, r.size, row.is_delta, load=False,
                                     note="the TPP specification has no column list for it: archived, not loaded"))
        else:
            files.append(PlannedFile(row.table, r.name, r.path, r.size, row.is_delta))
    extra = []
    for n, r in sorted(names.items()):
        if n in listed or n == tpp.MANIFEST:
            continue
        table = tpp.table_of(n)
        if table in tpp.UNLISTED and _spec_columns(table):
            files.append(PlannedFile(table, n, r.path, r.size, None))  # sent without a manifest row
        else:
            extra.append(n)
    m = names[tpp.MANIFEST]
    files.append(PlannedFile(tpp.MANIFEST_TABLE, m.name, m.path, m.size, None, load=False, note="the manifest"))
    # tables in a fixed (sorted) order: loads lock raw tables in this order, so two never deadlock
    files.sort(key=lambda f: (f.table, f.name))
    return files, unknown, extra


def discover(client, feed: Feed, conninfo: str, *, until: dt.datetime | None = None) -> Discovery:
    """List the gateway and plan its batch folders, oldest extract first.

    ``client`` is an :class:`~im1.transport.sftp.SftpClient` or a
    :class:`~im1.transport.folder.FolderClient`. ``ready`` batches have their manifest and every
    file it names (and are not done yet); ``incomplete`` ones do not. Batches whose extract time
    is at or after ``until`` (the end of the run's data interval) belong to a later run.
    """
    root = gateway_root(feed).rstrip("/") or "/"
    listing = list(client.walk(root))
    folders: dict[str, list[RemoteFile]] = {}
    for r in listing:
        folders.setdefault(posixpath.dirname(r.path), []).append(r)
    foreign: list[str] = []
    candidates: list[PlannedBatch] = []
    incomplete: list[dict] = []
    later: list[str] = []
    for folder, items in sorted(folders.items()):
        key = posixpath.relpath(folder, root)
        names = {posixpath.basename(r.path): r for r in items}
        if key == "." or not any(tpp.FILE.match(n) for n in names):
            foreign += [r.path for r in items]
            continue
        if tpp.MANIFEST not in names:
            ts = _folder_ts(folder, items)
            if until is not None and ts >= until:
                later.append(key)
                continue
            incomplete.append({"batch_key": key, "extract_ts": ts.isoformat(), "missing_tables": [tpp.MANIFEST],
                               "what": f"{tpp.MANIFEST} (the folder is still being written: TPP writes the "
                                       "manifest last)", "expected_version": None})
            continue
        error = None
        try:
            manifest = tpp.parse_manifest(client.read_bytes(names[tpp.MANIFEST].path))
        except tpp.ManifestError as err:
            error, manifest = str(err), tpp.Manifest(())
        present = {n.lower() for n in names}
        missing = [f"{t}.csv" for t in manifest.tables if f"{t}.csv".lower() not in present]
        ts = manifest.extract_to or tpp.folder_time(posixpath.basename(folder))
        if ts is None:
            ts = _folder_ts(folder, items)
            error = error or (f"{tpp.MANIFEST} has no DateExtractTo and the folder name {posixpath.basename(folder)!r} "
                              "is not a yyyyMMdd_HHmm time: the batch's extract time is unknown")
        if until is not None and ts >= until:
            later.append(key)
            continue
        if missing and not error:
            incomplete.append({"batch_key": key, "extract_ts": ts.isoformat(), "missing_tables": missing,
                               "what": f"file(s) {', '.join(missing)} named in {tpp.MANIFEST}",
                               "expected_version": None})
            continue
        if error:
            m = names[tpp.MANIFEST]
            files = [PlannedFile(tpp.MANIFEST_TABLE, m.name, m.path, m.size, None,
                                 load=False, note="the manifest")]
            files += [PlannedFile(tpp.table_of(n), n, r.path, r.size, None, load=False, note="not loaded")
                      for n, r in sorted(names.items()) if n != tpp.MANIFEST]
            unknown, extra = [], []
        else:
            files, unknown, extra = _plan_files(manifest, names)
        frm = manifest.extract_from
        candidates.append(PlannedBatch(batch_key=key, folder=folder, extract_ts=ts.isoformat(),
                                       extract_from=frm.isoformat() if frm else None, files=files, error=error,
                                       unknown_tables=unknown, extra_files=extra))
    ready: list[PlannedBatch] = []
    done: list[str] = []
    with psycopg.connect(conninfo) as conn:
        for b in candidates:
            if batch_done(conn, feed, b.batch_key):
                done.append(b.batch_key)
            else:
                ready.append(b)
        # a re-delivery: another folder with the same extract time as a loaded (or an earlier-listed) batch
        first: dict[str, str] = {}
        for b in sorted(ready, key=lambda b: b.batch_key):
            if b.error:
                continue
            loaded = conn.execute(
                """select batch_key from ingest.batches where feed_id = %s and extract_ts = %s and batch_key <> %s
                     and status = 'loaded' order by batch_id limit 1""",
                (feed.id, dt.datetime.fromisoformat(b.extract_ts), b.batch_key)).fetchone()
            if loaded:
                b.duplicate_of = loaded[0]
            elif b.extract_ts in first:
                b.duplicate_of = first[b.extract_ts]
            else:
                first[b.extract_ts] = b.batch_key
    ready.sort(key=lambda b: (b.extract_ts, b.batch_key))
    incomplete.sort(key=lambda b: (b["extract_ts"], b["batch_key"]))
    return Discovery(ready=ready, incomplete=incomplete, foreign_files=foreign, already_loaded=done,
                     after_interval=later)


def batch_archive(feed: Feed, batch_key: str, archive_root: Path | None = None) -> Path:
    """Where a batch's files are archived (owner-only: TPP files are plaintext patient data)."""
    root = paths.private_dir(archive_root or archive_dir(feed))
    return paths.private_dir(root / batch_key.replace("/", "__"))


def fetch(client, feed: Feed, batch: PlannedBatch, conninfo: str, archive_root: Path | None = None) -> dict:
    """Copy every file of the batch (the manifest too) into the archive and record it in the ledger.

    A file already archived for this batch with the same size and checksum is not copied again,
    unless the batch was released (the supplier may have re-delivered it). A batch whose manifest
    cannot be trusted, or that re-delivers a loaded extract, is quarantined here (after archiving).
    Returns ``{"batch_key", "extract_ts", "batch_ids": {ods: id}, "files": [...], "error"}``.
    """
    dest_dir = batch_archive(feed, batch.batch_key, archive_root)
    ts = dt.datetime.fromisoformat(batch.extract_ts)
    loadable = [f for f in batch.files if f.load]
    out_files = []
    with psycopg.connect(conninfo) as conn:
        batch_ids: dict[str, int] = {}
        for org in feed.organisations:
            row = ledger.register_batch(conn, feed_id=feed.id, supplier=feed.supplier, batch_key=batch.batch_key,
                                        organisation=org.ods_code, extract_ts=ts, file_count=len(loadable))
            if row.extract_ts != ts and not row.final:
                # first registered from the folder name (incomplete at the deadline); the manifest says better
                conn.execute("update ingest.batches set extract_ts = %s where batch_id = %s", (ts, row.batch_id))
            batch_ids[org.ods_code] = row.batch_id
        rows = {o: ledger.get_batch(conn, b) for o, b in batch_ids.items()}
        released = any(r.status == ledger.RELEASED for r in rows.values())
        any_id = next(iter(batch_ids.values()))
        for note, names in (("files in the batch folder that SRManifest.csv does not list (not loaded)",
                             batch.extra_files),
                            ("files listed in SRManifest.csv that the TPP specification does not know "
                             "(archived, not loaded)", batch.unknown_tables)):
            if names:
                ledger.log_event(conn, f"{batch.batch_key}: {note}: {', '.join(names)}", feed_id=feed.id,
                                 batch_id=any_id, level="warning")
        conn.commit()
        for pf in batch.files:
            dest = dest_dir / pf.name
            known = ledger.file_checksum(conn, any_id, pf.name)
            if (not released and known and dest.exists() and dest.stat().st_size == pf.size == known[1]
                    and sha256_of(dest) == known[0]):
                log.info("%s of %s already archived with the same checksum; not fetched again", pf.name,
                         batch.batch_key)
                digest = known[0]
            else:
                try:
                    client.download(RemoteFile(pf.remote_path, pf.size, 0), dest)
                except Exception as err:
                    ledger.log_event(conn, f"fetch of {pf.remote_path} failed: {type(err).__name__}: {err} "
                                     "(the next attempt resumes the partial copy)",
                                     feed_id=feed.id, batch_id=any_id, level="error")
                    conn.commit()
                    raise
                digest = sha256_of(dest)
                if known and digest != known[0]:
                    ledger.log_event(conn, f"{batch.batch_key}/{pf.name}: re-fetched with a new checksum "
                                     f"{digest[:12]} (was {known[0][:12]})", feed_id=feed.id, batch_id=any_id,
                                     level="warning")
            for bid in batch_ids.values():
                fid = ledger.upsert_file(conn, batch_id=bid, file_name=pf.name, table_name=pf.table,
                                         remote_path=pf.remote_path, archive_path=str(dest), size=pf.size,
                                         sha256=digest, is_delta=pf.is_delta)
                if not pf.load:
                    conn.execute("update ingest.files set status = %s, error = %s where file_id = %s",
                                 (NOT_LOADED, pf.note or None, fid))
            out_files.append({"table": pf.table, "name": pf.name, "archive_path": str(dest), "sha256": digest,
                              "is_delta": pf.is_delta, "load": pf.load})
        reason = batch.error
        if batch.duplicate_of and not reason and not released:  # a released duplicate is loaded as asked
            reason = (f"duplicate delivery: the extract of {batch.extract_ts} (DateExtractTo) was already delivered "
                      f"as batch {batch.duplicate_of}; release this batch to load it as well")
        for bid in batch_ids.values():
            row = ledger.get_batch(conn, bid)
            if row.final:
                continue
            if reason:
                ledger.quarantine(conn, bid, reason, feed_id=feed.id)
            else:
                ledger.set_status(conn, bid, "fetched")
        conn.commit()
    return {"batch_key": batch.batch_key, "extract_ts": batch.extract_ts, "extract_from": batch.extract_from,
            "batch_ids": batch_ids, "files": out_files, "error": reason}


def _check_continuity(conn: psycopg.Connection, feed: Feed, ods_code: str, fetched: dict, batch_id: int) -> None:
    """Report a gap (DateExtractFrom after the previous loaded extract's cut-off: changes may be
    missing) or an overlap (normal after a re-bulk; rows apply in extract order, nothing doubles)."""
    if not fetched.get("extract_from"):
        return
    frm = dt.datetime.fromisoformat(fetched["extract_from"])
    ts = dt.datetime.fromisoformat(fetched["extract_ts"])
    prev = conn.execute(
        """select max(extract_ts) from ingest.batches
            where feed_id = %s and organisation = %s and status = 'loaded' and extract_ts < %s""",
        (feed.id, ods_code, ts)).fetchone()[0]
    if prev is None:
        return
    key = fetched["batch_key"]
    if frm > prev:
        ledger.log_event(conn, f"{key}: gap in the extracts: DateExtractFrom {frm:%Y%m%d_%H%M} is later than the "
                         f"previous loaded extract's DateExtractTo {prev:%Y%m%d_%H%M}; changes in between may be "
                         "missing until that extract arrives (or ask the supplier for it, or a re-bulk)",
                         feed_id=feed.id, batch_id=batch_id, level="warning")
    elif frm < prev:
        ledger.log_event(conn, f"{key}: DateExtractFrom {frm:%Y%m%d_%H%M} overlaps the previous extract (to "
                         f"{prev:%Y%m%d_%H%M}), as after a re-bulk; rows apply in extract order",
                         feed_id=feed.id, batch_id=batch_id, level="info")


def copy_file(conn: psycopg.Connection, f: dict, file_id: int, schema: str = RAW_SCHEMAS["tpp"]) -> StagedFile:
    """Stream one archived TPP file into ``raw_tpp.<table>``: Windows-1252 decoded to UTF-8 on the way,
    header checked (key columns present), unknown columns kept; returns the staged file's facts.

    ``unknown_columns`` are those the TPP specification does not list (reported on every load)."""
    path = Path(f["archive_path"])
    sf = StagedFile(table=f["table"], path=path, file_id=file_id, encoding="UTF8")
    try:
        with open(path, "rb") as fh:
            reader = Cp1252Reader(fh, f["name"])
            head = read_head(reader)
            header = parse_header(head, "UTF8", f["name"])
            missing = [c for c in required_columns(f["table"]) if c.lower() not in {h.lower() for h in header}]
            if missing:
                raise HeaderError(f"{f['name']}: required column(s) missing from the header: {', '.join(missing)}")
            copy_stream(conn, schema, sf, reader, head)
    except psycopg.errors.DataError as err:
        raise QuarantineError(f"{f['name']}: {copy_error(err)}") from err
    except (FileFormatError, HeaderError) as err:
        raise QuarantineError(str(err)) from err
    known = {specs.raw_column_name(c) for c in _spec_columns(f["table"]) or ()}
    sf.unknown_columns = [h for h in sf.header if specs.raw_column_name(h) not in known]
    return sf


def load(feed: Feed, ods_code: str, fetched: dict, conninfo: str) -> dict:
    """COPY one batch for one organisation into ``raw_tpp``, in a single transaction (all or nothing).

    Returns ``status`` loaded / skipped (already loaded, or quarantined and not released). Raises
    :class:`QuarantineError` when the delivery is bad (the batch is quarantined first).
    """
    batch_id = int(fetched["batch_ids"][ods_code])
    schema = RAW_SCHEMAS["tpp"]
    t0 = time.monotonic()
    conn = None
    late = False
    try:
        conn = psycopg.connect(conninfo)
        # one loader per feed and organisation at a time
        conn.execute("select pg_advisory_lock(hashtext(%s))", (f"im1.load:{feed.id}:{ods_code}",))
        row = ledger.get_batch(conn, batch_id)
        if row.status == ledger.QUARANTINED and fetched.get("error"):
            conn.commit()  # quarantined by this run's fetch (untrustworthy manifest, re-delivery): say so
            raise QuarantineError(f"batch {fetched['batch_key']} for {ods_code} quarantined: {fetched['error']}")
        if row.final:
            log.info("batch %s for %s is %s; nothing to do", row.batch_key, ods_code, row.status)
            conn.commit()
            return {"batch_id": batch_id, "ods_code": ods_code, "rows": 0, "skipped": True, "status": row.status}
        latest = ledger.latest_loaded_ts(conn, feed.id, ods_code)
        late = latest is not None and latest > row.extract_ts
        ledger.set_status(conn, batch_id, ledger.LOADING, is_late=late)
        conn.commit()
        file_ids = dict(
            conn.execute("select file_name, file_id from ingest.files where batch_id = %s", (batch_id,)).fetchall()
        )
        total = 0
        with conn.transaction():
            set_load_context(conn, feed_id=feed.id, organisation=ods_code, batch_id=batch_id)
            for f in sorted((f for f in fetched["files"] if f["load"]), key=lambda f: (f["table"], f["name"])):
                sf = copy_file(conn, f, int(file_ids[f["name"]]), schema)
                ledger.record_file_rows(conn, sf.file_id, rows_in_file=sf.rows, rows_loaded=sf.rows,
                                        status="loaded", unknown_columns=sf.unknown_columns, seconds=sf.seconds)
                if sf.unknown_columns:
                    ledger.log_event(conn, f"{fetched['batch_key']}/{f['name']}: column(s) not in the TPP "
                                     f"specification, kept: {', '.join(sf.unknown_columns)}",
                                     feed_id=feed.id, batch_id=batch_id, level="warning")
                total += sf.rows
            _check_continuity(conn, feed, ods_code, fetched, batch_id)
            if late:
                ledger.log_event(conn, f"{fetched['batch_key']}: loaded late: its extract ({row.extract_ts:%Y-%m-%d %H:%M}) "
                                 f"is older than one already loaded ({latest:%Y-%m-%d %H:%M}); staging "
                                 "applies rows in extract order", feed_id=feed.id, batch_id=batch_id,
                                 level="warning")
            ledger.set_status(conn, batch_id, ledger.LOADED, rows_loaded=total)
        conn.commit()
    except Exception as err:
        record_failure(conninfo, conn, [batch_id], err, feed.id)
        if isinstance(err, QUARANTINE_ERRORS):
            raise QuarantineError(f"batch {fetched['batch_key']} for {ods_code} quarantined: {err}") from err
        raise
    finally:
        if conn is not None:
            conn.close()
    secs = time.monotonic() - t0
    log.info("loaded TPP batch %s for %s: %d rows in %.1fs", fetched["batch_key"], ods_code, total, secs)
    return {"batch_id": batch_id, "ods_code": ods_code, "rows": total, "seconds": round(secs, 3), "late": late,
            "status": ledger.LOADED}
