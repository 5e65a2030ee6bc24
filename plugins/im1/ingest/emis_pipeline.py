"""EMIS ingest steps: discover batches on SFTP, fetch and archive them, decrypt and stage them.

Each step takes and returns plain, JSON-serialisable values so the Airflow tasks (and the CLI)
can pass them along; none of it imports Airflow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from im1 import emis, paths, specs
from im1.config import Feed
from im1.crypto import DecryptError, Keyring
from im1.ingest import ledger
from im1.ingest.credentials import PgpKey
from im1.ingest.load import HeaderError, StagedFile, copy_stream, parse_header, read_head, set_load_context
from im1.transport.sftp import RemoteFile, SftpClient, SftpSettings
from im1.warehouse.bootstrap import RAW_SCHEMAS

log = logging.getLogger(__name__)


class QuarantineError(RuntimeError):
    """The batch cannot be loaded as delivered; it is quarantined with this reason."""


@dataclass
class PlannedFile:
    table: str
    name: str
    remote_path: str
    size: int


@dataclass
class PlannedBatch:
    batch_key: str  # ledger key: "<batch>@<yyyyMMddHHmmss>"
    extract_ts: str  # ISO
    agreement_guid: str
    is_bulk: bool | None
    files: list[PlannedFile] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # remote paths of other copies (not fetched)
    unknown_tables: list[str] = field(default_factory=list)  # tables not in the spec (not loaded)
    expected_version: str = specs.LATEST_EMIS_VERSION

    @classmethod
    def from_dict(cls, d: dict) -> PlannedBatch:
        return cls(**{**d, "files": [PlannedFile(**f) for f in d["files"]]})


@dataclass
class Discovery:
    ready: list[PlannedBatch]
    incomplete: list[dict]  # {"batch_key", "extract_ts", "missing_tables", "expected_version"}
    foreign_files: list[str]
    already_loaded: list[str]  # nothing left to do: every organisation loaded or quarantined
    after_interval: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def expected_organisations(feed: Feed) -> list[str]:
    """The ledger organisations of one batch: each ODS code, plus the shared row of a multi-org feed."""
    orgs = [o.ods_code for o in feed.organisations]
    return [*orgs, ledger.SHARED] if feed.extract == "multi_organisation" else orgs


def batch_done(conn: psycopg.Connection, feed: Feed, batch_key: str) -> bool:
    """Every organisation of the batch is loaded or quarantined (a released one is pending again)."""
    rows = ledger.batches_for_key(conn, feed.id, batch_key)
    return all(o in rows and rows[o].final for o in expected_organisations(feed))


def discover(client: SftpClient, feed: Feed, conninfo: str, *, until: dt.datetime | None = None) -> Discovery:
    """List the feed's folder and group the files into batches, oldest first.

    ``ready`` batches are complete (a file for every table the expected schema version has) and not
    yet done; ``incomplete`` ones still miss tables. Batches with an extract timestamp at or after
    ``until`` (the end of the run's data interval) belong to a later run. When the same file was
    delivered twice (e.g. again in another date folder), the newest copy is used and the others
    are listed as duplicates.
    """
    assert feed.transport.kind == "sftp"
    remote = sorted(client.walk(feed.transport.path), key=lambda r: (-r.mtime, r.path))
    batches, foreign = emis.group_batches([(r.name, r) for r in remote], feed.sharing_agreement_guid)
    ready: list[PlannedBatch] = []
    incomplete: list[dict] = []
    done: list[str] = []
    later: list[str] = []
    with psycopg.connect(conninfo) as conn:
        version = ledger.latest_version(conn, feed.id) or specs.LATEST_EMIS_VERSION
        for b in batches:
            if until is not None and b.extract_ts >= until:
                later.append(b.key)
                continue
            if batch_done(conn, feed, b.key):
                done.append(b.key)
                continue
            if not b.is_complete(version):
                incomplete.append({"batch_key": b.key, "extract_ts": b.extract_ts.isoformat(),
                                   "missing_tables": b.missing_tables(version), "expected_version": version})
                continue
            unknown = b.unknown_tables()
            files = []
            for table in sorted(set(b.files) - set(unknown)):
                r: RemoteFile = b.files[table]  # type: ignore[assignment]
                files.append(PlannedFile(table=table, name=r.name, remote_path=r.path, size=r.size))
            first = next(iter(b.names.values()))
            dup_paths = [r.path for r in remote if r.name in set(b.duplicates)]
            ready.append(
                PlannedBatch(
                    batch_key=b.key,
                    extract_ts=b.extract_ts.isoformat(),
                    agreement_guid=b.agreement_guid,
                    is_bulk=first.is_bulk,
                    files=files,
                    duplicates=sorted(set(dup_paths) - {f.remote_path for f in files}),
                    unknown_tables=unknown,
                    expected_version=version,
                )
            )
    return Discovery(ready=ready, incomplete=incomplete, foreign_files=foreign, already_loaded=done,
                     after_interval=later)


def quarantine_incomplete(feed: Feed, incomplete: list[dict], conninfo: str, waited: str) -> str:
    """At the batch deadline: quarantine each incomplete batch (for every organisation) with its
    missing tables, and return the alert text."""
    lines = []
    with psycopg.connect(conninfo) as conn:
        for b in incomplete:
            # `what` (optional) says what is missing in the supplier's terms, e.g. a TPP manifest
            what = b.get("what") or f"table(s) {', '.join(b['missing_tables'])}"
            spec = f" (spec {b['expected_version']})" if b.get("expected_version") else ""
            reason = (f"incomplete batch: {what} still missing after {waited}{spec}; "
                      "once the supplier delivers them, release the batch")
            ts = dt.datetime.fromisoformat(b["extract_ts"])
            delivery = None
            if feed.extract == "multi_organisation":
                delivery = ledger.register_batch(conn, feed_id=feed.id, supplier=feed.supplier,
                                                 batch_key=b["batch_key"], organisation=ledger.SHARED,
                                                 extract_ts=ts, file_count=None).batch_id
            for org in expected_organisations(feed):
                row = ledger.register_batch(conn, feed_id=feed.id, supplier=feed.supplier, batch_key=b["batch_key"],
                                            organisation=org, extract_ts=ts, file_count=None,
                                            delivery_batch_id=None if org == ledger.SHARED else delivery)
                if not row.final:
                    ledger.quarantine(conn, row.batch_id, reason, feed_id=feed.id)
            lines.append(f"{b['batch_key']}: missing {', '.join(b['missing_tables'])}")
        conn.commit()
    return (f"IM1 feed {feed.id}: batch(es) still incomplete after {waited}: " + "; ".join(lines)
            + " - quarantined; release them once the missing files are delivered")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def archive_dir(feed: Feed) -> Path:
    return paths.state_dir() / "archive" / feed.id


def files_for(feed: Feed, org: str, batch: PlannedBatch) -> list[PlannedFile]:
    """Which of a batch's files belong to an organisation's ledger row.

    Organisation extract: all of them. Multi-organisation: the shared row holds every file (shared
    tables are loaded from it, per-practice ones staged); each practice holds the per-practice files.
    """
    if feed.extract != "multi_organisation" or org == ledger.SHARED:
        return batch.files
    return [f for f in batch.files if f.table not in specs.EMIS_SHARED_TABLES]


def fetch(client: SftpClient, feed: Feed, batch: PlannedBatch, conninfo: str, archive_root: Path | None = None) -> dict:
    """Download every file of the batch into the archive (encrypted originals are kept).

    A file already archived with the same size and checksum is not downloaded again, unless the
    batch was released (the supplier may have re-delivered it under the same name).
    Returns ``{"batch_ids": {org: id}, "files": [...]}`` for the load step.
    """
    root = (archive_root or archive_dir(feed)) / batch.batch_key.replace("@", "_")
    ts = dt.datetime.fromisoformat(batch.extract_ts)
    out_files = []
    with psycopg.connect(conninfo) as conn:
        batch_ids: dict[str, int] = {}
        delivery = None
        if feed.extract == "multi_organisation":
            row = ledger.register_batch(conn, feed_id=feed.id, supplier=feed.supplier, batch_key=batch.batch_key,
                                        organisation=ledger.SHARED, extract_ts=ts, file_count=len(batch.files))
            delivery = row.batch_id
            batch_ids[ledger.SHARED] = row.batch_id
        for org in feed.organisations:
            row = ledger.register_batch(
                conn,
                feed_id=feed.id,
                supplier=feed.supplier,
                batch_key=batch.batch_key,
                organisation=org.ods_code,
                extract_ts=ts,
                file_count=len(files_for(feed, org.ods_code, batch)),
                delivery_batch_id=delivery,
            )
            batch_ids[org.ods_code] = row.batch_id
        rows = {o: ledger.get_batch(conn, b) for o, b in batch_ids.items()}
        released = any(r.status == ledger.RELEASED for r in rows.values())
        any_id = next(iter(batch_ids.values()))
        for note, names in (("duplicate copies ignored (the newest copy is used)", batch.duplicates),
                            ("tables not in the extract specification, archived but not loaded",
                             batch.unknown_tables)):
            if names:
                ledger.log_event(conn, f"{batch.batch_key}: {note}: {', '.join(names)}", feed_id=feed.id,
                                 batch_id=any_id, level="warning")
        conn.commit()
        for pf in batch.files:
            dest = root / pf.name
            known = ledger.archived_checksum(conn, feed.id, pf.name, pf.size)
            if (not released and dest.exists() and dest.stat().st_size == pf.size and known
                    and sha256_of(dest) == known):
                log.info("%s already archived with the same checksum; not fetched again", pf.name)
                digest = known
            else:
                try:
                    client.download(RemoteFile(pf.remote_path, pf.size, 0), dest)
                except Exception as err:
                    ledger.log_event(conn, f"fetch of {pf.remote_path} failed: {type(err).__name__}: {err} "
                                     "(the next attempt resumes the partial download)",
                                     feed_id=feed.id, batch_id=any_id, level="error")
                    conn.commit()
                    raise
                digest = sha256_of(dest)
                before = ledger.archived_checksum(conn, feed.id, pf.name, None)
                if before and digest != before:
                    ledger.log_event(conn, f"{pf.name}: re-fetched with a new checksum {digest[:12]} "
                                     f"(was {before[:12]})", feed_id=feed.id, batch_id=any_id, level="warning")
            for org, bid in batch_ids.items():
                if pf in files_for(feed, org, batch):
                    ledger.upsert_file(
                        conn,
                        batch_id=bid,
                        file_name=pf.name,
                        table_name=pf.table,
                        remote_path=pf.remote_path,
                        archive_path=str(dest),
                        size=pf.size,
                        sha256=digest,
                    )
            out_files.append({"table": pf.table, "name": pf.name, "archive_path": str(dest), "sha256": digest,
                              "remote_path": pf.remote_path})
        for bid in batch_ids.values():
            row = ledger.get_batch(conn, bid)
            if not row.final:
                ledger.set_status(conn, bid, "fetched")
        conn.commit()
    return {"batch_key": batch.batch_key, "extract_ts": batch.extract_ts, "batch_ids": batch_ids,
            "files": out_files, "expected_version": batch.expected_version}


def _validate_header(table: str, file_name: str, header: list[str]) -> str:
    """The spec version the header satisfies; quarantine if a required column is missing."""
    version = specs.detect_emis_version(table, header)
    if version is None:
        oldest = specs.EMIS_VERSIONS[-1]
        missing = [c for c in specs.emis_table(table).column_names(oldest) if c not in set(header)]
        raise QuarantineError(f"{file_name}: required column(s) missing from the header: {', '.join(missing)}")
    return version


def check_batch_tables(fetched: dict, version: str) -> None:
    """The batch holds every table its detected schema version expects (checked again after decrypting)."""
    present = {f["table"] for f in fetched["files"]}
    missing = sorted(set(specs.emis_expected_tables(version)) - present)
    if missing:
        raise QuarantineError(f"batch {fetched['batch_key']} is spec {version} but lacks table(s) {', '.join(missing)}")


def work_dir() -> Path:
    return paths.private_dir(paths.state_dir() / "work")


# failures that mean "this delivery is bad as delivered": quarantine, do not retry
QUARANTINE_ERRORS = (DecryptError, HeaderError, QuarantineError, psycopg.errors.DataError)


def record_failure(conninfo: str, conn: psycopg.Connection | None, batch_ids: list[int], err: BaseException,
                   feed_id: str) -> None:
    """Record a failed load in the ledger; works even when ``conn`` died (e.g. it was terminated)."""
    text = f"{type(err).__name__}: {err}".strip()
    quarantine = isinstance(err, QUARANTINE_ERRORS)

    def write(c: psycopg.Connection) -> None:
        for bid in batch_ids:
            if quarantine:
                ledger.quarantine(c, bid, str(err), feed_id=feed_id)
            else:
                ledger.set_status(c, bid, ledger.FAILED, error=text)
                ledger.log_event(c, f"load failed (will be retried): {text}", feed_id=feed_id, batch_id=bid,
                                 level="error")
        c.commit()

    try:
        if conn is None or conn.closed or conn.broken:
            raise psycopg.OperationalError("connection not usable")
        conn.rollback()
        write(conn)
    except psycopg.Error:
        with psycopg.connect(conninfo) as fresh:
            write(fresh)


def load(feed: Feed, ods_code: str, fetched: dict, key: PgpKey, conninfo: str) -> dict:
    """Decrypt and COPY one batch for one organisation, in a single transaction (all or nothing).

    Used for organisation extracts (every row of every file is the organisation's). Returns a
    result with ``status`` loaded / skipped (already loaded, or quarantined and not released).
    Raises :class:`QuarantineError` when the delivery is bad (the batch is quarantined first).
    """
    batch_id = int(fetched["batch_ids"][ods_code])
    schema = RAW_SCHEMAS[feed.supplier]
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"{feed.id}-{batch_id}-", dir=work_dir()))
    conn = None
    try:
        conn = psycopg.connect(conninfo)
        # one loader per feed and organisation at a time
        conn.execute("select pg_advisory_lock(hashtext(%s))", (f"im1.load:{feed.id}:{ods_code}",))
        row = ledger.get_batch(conn, batch_id)
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
        versions: set[str] = set()
        with Keyring() as kr:
            kr.import_key(key.secret_armored, key.passphrase)
            with conn.transaction():
                set_load_context(conn, feed_id=feed.id, organisation=ods_code, batch_id=batch_id)
                for f in fetched["files"]:
                    rows, version, sf = decrypt_and_copy(conn, kr, key, schema, f, work, int(file_ids[f["name"]]))
                    versions.add(version)
                    ledger.record_file_rows(conn, sf.file_id, rows_in_file=rows, rows_loaded=rows, status="loaded",
                                            schema_version=version, unknown_columns=sf.unknown_columns,
                                            seconds=sf.seconds)
                    if sf.unknown_columns:
                        ledger.log_event(
                            conn,
                            f"{f['name']}: unknown column(s) kept: {', '.join(sf.unknown_columns)}",
                            feed_id=feed.id,
                            batch_id=batch_id,
                            level="warning",
                        )
                    total += rows
                version = min(versions) if versions else None
                if version:
                    check_batch_tables(fetched, version)
                ledger.set_status(conn, batch_id, ledger.LOADED, rows_loaded=total, schema_version=version)
        conn.commit()
    except Exception as err:
        record_failure(conninfo, conn, [batch_id], err, feed.id)
        if isinstance(err, QUARANTINE_ERRORS):
            raise QuarantineError(f"batch {fetched['batch_key']} for {ods_code} quarantined: {err}") from err
        raise
    finally:
        if conn is not None:
            conn.close()
        shutil.rmtree(work, ignore_errors=True)
    secs = time.monotonic() - t0
    log.info("loaded batch %s for %s: %d rows in %.1fs", fetched["batch_key"], ods_code, total, secs)
    return {"batch_id": batch_id, "ods_code": ods_code, "rows": total, "seconds": round(secs, 3), "late": late,
            "status": ledger.LOADED}


def decrypt_and_copy(conn: psycopg.Connection, kr: Keyring, key: PgpKey, schema: str, f: dict, work: Path,
                     file_id: int, table: str | None = None) -> tuple[int, str, StagedFile]:
    """Decrypt one archived file while COPY streams its plaintext into ``schema.<table>``.

    The header is checked against the spec first; the plaintext is deleted afterwards.
    """
    src = Path(f["archive_path"])
    plain = work / (src.name[:-4] if src.name.endswith(".gpg") else src.name)
    sf = StagedFile(table=table or f["table"], path=plain, file_id=file_id)
    try:
        # gpg decrypts into the private work folder while COPY streams the plaintext in
        with kr.decrypting(src, plain, passphrase=key.passphrase) as stream:
            head = read_head(stream)
            version = _validate_header(f["table"], f["name"], parse_header(head, name=plain.name))
            rows = copy_stream(conn, schema, sf, stream, head)
    except psycopg.errors.DataError as err:
        raise QuarantineError(f"{f['name']}: {copy_error(err)}") from err
    finally:
        plain.unlink(missing_ok=True)
    return rows, version, sf


_COPY_LINE = re.compile(r"\bline (\d+)")


def copy_error(err: psycopg.Error) -> str:
    """PostgreSQL's COPY error without the offending row's content (it may hold patient data)."""
    diag = err.diag
    msg = diag.message_primary or str(err).splitlines()[0]
    line = _COPY_LINE.search(diag.context or "")
    where = f" at line {line.group(1)} of the file (counting the header as line 1)" if line else ""
    return f"the file is not valid CSV for PostgreSQL COPY: {msg}{where}"


def sftp_settings_for(feed: Feed, *, username: str, private_key: str, host_key: str,
                      key_passphrase: str | None = None) -> SftpSettings:
    assert feed.transport.kind == "sftp"
    return SftpSettings(
        host=feed.transport.host,
        port=feed.transport.port,
        username=username,
        private_key=private_key,
        host_key=host_key,
        key_passphrase=key_passphrase,
    )
