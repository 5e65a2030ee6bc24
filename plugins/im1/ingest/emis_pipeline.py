"""EMIS ingest steps: discover batches on SFTP, fetch and archive them, decrypt and stage them.

Each step takes and returns plain, JSON-serialisable values so the Airflow tasks (and the CLI)
can pass them along; none of it imports Airflow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
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

    @classmethod
    def from_dict(cls, d: dict) -> PlannedBatch:
        return cls(**{**d, "files": [PlannedFile(**f) for f in d["files"]]})


@dataclass
class Discovery:
    ready: list[PlannedBatch]
    incomplete: list[dict]
    foreign_files: list[str]
    already_loaded: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def discover(client: SftpClient, feed: Feed, conninfo: str) -> Discovery:
    """List the feed's folder, group files into batches and keep the complete, not-yet-loaded ones."""
    assert feed.transport.kind == "sftp"
    remote = list(client.walk(feed.transport.path))
    batches, foreign = emis.group_batches([(r.name, r) for r in remote], feed.sharing_agreement_guid)
    ready: list[PlannedBatch] = []
    incomplete: list[dict] = []
    loaded: list[str] = []
    orgs = [o.ods_code for o in feed.organisations]
    with psycopg.connect(conninfo) as conn:
        for b in batches:
            done = all(
                (row := ledger.find_batch(conn, feed.id, b.key, ods)) is not None and row.status == ledger.LOADED
                for ods in orgs
            )
            if done:
                loaded.append(b.key)
                continue
            if not b.is_complete():
                incomplete.append({"batch_key": b.key, "missing_tables": b.missing_tables()})
                continue
            files = []
            for table in sorted(b.files):
                r: RemoteFile = b.files[table]  # type: ignore[assignment]
                files.append(PlannedFile(table=table, name=r.name, remote_path=r.path, size=r.size))
            first = next(iter(b.names.values()))
            ready.append(
                PlannedBatch(
                    batch_key=b.key,
                    extract_ts=b.extract_ts.isoformat(),
                    agreement_guid=b.agreement_guid,
                    is_bulk=first.is_bulk,
                    files=files,
                )
            )
    return Discovery(ready=ready, incomplete=incomplete, foreign_files=foreign, already_loaded=loaded)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def archive_dir(feed: Feed) -> Path:
    return paths.state_dir() / "archive" / feed.id


def fetch(client: SftpClient, feed: Feed, batch: PlannedBatch, conninfo: str, archive_root: Path | None = None) -> dict:
    """Download every file of the batch into the archive (encrypted originals are kept).

    A file already archived with the same size and checksum is not downloaded again.
    Returns ``{"batch_ids": {ods: id}, "files": [...]}`` for the load step.
    """
    root = (archive_root or archive_dir(feed)) / batch.batch_key.replace("@", "_")
    ts = dt.datetime.fromisoformat(batch.extract_ts)
    out_files = []
    with psycopg.connect(conninfo) as conn:
        batch_ids = {}
        for org in feed.organisations:
            row = ledger.register_batch(
                conn,
                feed_id=feed.id,
                supplier=feed.supplier,
                batch_key=batch.batch_key,
                organisation=org.ods_code,
                extract_ts=ts,
                file_count=len(batch.files),
            )
            batch_ids[org.ods_code] = row.batch_id
        conn.commit()
        for pf in batch.files:
            dest = root / pf.name
            known = ledger.archived_checksum(conn, feed.id, pf.name, pf.size)
            if dest.exists() and dest.stat().st_size == pf.size and known and sha256_of(dest) == known:
                log.info("%s already archived with the same checksum; not fetched again", pf.name)
                digest = known
            else:
                client.download(RemoteFile(pf.remote_path, pf.size, 0), dest)
                digest = sha256_of(dest)
            for bid in batch_ids.values():
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
            out_files.append({"table": pf.table, "name": pf.name, "archive_path": str(dest), "sha256": digest})
        for bid in batch_ids.values():
            row = ledger.get_batch(conn, bid)
            if row.status not in (ledger.LOADED,):
                ledger.set_status(conn, bid, "fetched")
        conn.commit()
    return {"batch_key": batch.batch_key, "extract_ts": batch.extract_ts, "batch_ids": batch_ids, "files": out_files}


def _validate_header(table: str, file_name: str, header: list[str]) -> str:
    """The spec version the header satisfies; quarantine if a required column is missing."""
    version = specs.detect_emis_version(table, header)
    if version is None:
        oldest = specs.EMIS_VERSIONS[-1]
        missing = [c for c in specs.emis_table(table).column_names(oldest) if c not in set(header)]
        raise QuarantineError(f"{file_name}: required column(s) missing from the header: {', '.join(missing)}")
    return version


def work_dir() -> Path:
    return paths.private_dir(paths.state_dir() / "work")


def load(feed: Feed, ods_code: str, fetched: dict, key: PgpKey, conninfo: str) -> dict:
    """Decrypt and COPY one batch for one organisation, in a single transaction (all or nothing)."""
    batch_id = int(fetched["batch_ids"][ods_code])
    schema = RAW_SCHEMAS[feed.supplier]
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"{feed.id}-{batch_id}-", dir=work_dir()))
    try:
        with psycopg.connect(conninfo) as conn:
            # one loader per feed and organisation at a time
            conn.execute("select pg_advisory_lock(hashtext(%s))", (f"im1.load:{feed.id}:{ods_code}",))
            row = ledger.get_batch(conn, batch_id)
            if row.status == ledger.LOADED:
                log.info("batch %s for %s is already loaded; nothing to do", row.batch_key, ods_code)
                conn.commit()
                return {"batch_id": batch_id, "ods_code": ods_code, "rows": 0, "skipped": True}
            latest = ledger.latest_loaded_ts(conn, feed.id, ods_code)
            late = latest is not None and latest > row.extract_ts
            ledger.set_status(conn, batch_id, "loading", is_late=late)
            conn.commit()
            file_ids = dict(
                conn.execute("select file_name, file_id from ingest.files where batch_id = %s", (batch_id,)).fetchall()
            )
            total = 0
            versions: set[str] = set()
            try:
                with Keyring() as kr:
                    kr.import_key(key.secret_armored, key.passphrase)
                    with conn.transaction():
                        set_load_context(conn, feed_id=feed.id, organisation=ods_code, batch_id=batch_id)
                        for f in fetched["files"]:
                            src = Path(f["archive_path"])
                            plain = work / (src.name[:-4] if src.name.endswith(".gpg") else src.name)
                            sf = StagedFile(table=f["table"], path=plain, file_id=int(file_ids[f["name"]]))
                            # gpg decrypts into the work folder while COPY streams the plaintext in
                            with kr.decrypting(src, plain, passphrase=key.passphrase) as stream:
                                head = read_head(stream)
                                version = _validate_header(f["table"], f["name"], parse_header(head, name=plain.name))
                                versions.add(version)
                                rows = copy_stream(conn, schema, sf, stream, head)
                            conn.execute(
                                """update ingest.files set rows_loaded = %s, schema_version = %s,
                                          unknown_columns = %s, status = 'loaded', loaded_at = now(),
                                          load_seconds = %s where file_id = %s""",
                                (rows, version, sf.unknown_columns, sf.seconds, sf.file_id),
                            )
                            if sf.unknown_columns:
                                ledger.log_event(
                                    conn,
                                    f"{f['name']}: unknown column(s) kept: {', '.join(sf.unknown_columns)}",
                                    feed_id=feed.id,
                                    batch_id=batch_id,
                                    level="warning",
                                )
                            plain.unlink(missing_ok=True)
                            total += rows
                        version = min(versions) if versions else None
                        ledger.set_status(conn, batch_id, ledger.LOADED, rows_loaded=total, schema_version=version)
            except (DecryptError, HeaderError, QuarantineError, psycopg.errors.DataError) as err:
                conn.rollback()
                ledger.set_status(conn, batch_id, ledger.QUARANTINED, error=str(err))
                conn.commit()
                raise QuarantineError(f"batch {row.batch_key} for {ods_code} quarantined: {err}") from err
            except Exception as err:
                conn.rollback()
                ledger.set_status(conn, batch_id, ledger.FAILED, error=f"{type(err).__name__}: {err}")
                conn.commit()
                raise
            conn.commit()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    secs = time.monotonic() - t0
    log.info("loaded batch %s for %s: %d rows in %.1fs", fetched["batch_key"], ods_code, total, secs)
    return {"batch_id": batch_id, "ods_code": ods_code, "rows": total, "seconds": round(secs, 3), "late": late}


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
