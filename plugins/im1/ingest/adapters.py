"""What differs between the delivery kinds: one small adapter per kind.

The pipeline (:mod:`im1.ingest.pipeline`) runs every delivery the same way; an adapter knows only
what its kind does differently:

* which files form a batch and when it is complete (:meth:`Adapter.plan`);
* which ledger organisations a batch has and which files belong to each (:meth:`Adapter.organisations`,
  :meth:`Adapter.files_for`);
* where its originals are archived and whether a fetched batch must be held as delivered
  (:meth:`Adapter.archive_folder`, :meth:`Adapter.hold_reason`);
* how a file's plaintext is read into COPY (:meth:`Adapter.reading`, :meth:`Adapter.copy_file`)
  and what is checked when a batch is in (:meth:`Adapter.after_load`);
* which rows belong to which organisation (:class:`EmisMultiOrganisation` moves them out of
  staging; the others load every row for their one organisation).

Adding a delivery kind means one new adapter here and one line in :func:`adapter_for`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import posixpath
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from im1 import emis, paths, specs, tpp
from im1.config import Feed
from im1.crypto import Keyring
from im1.ingest import ledger
from im1.ingest.credentials import PgpKey
from im1.ingest.errors import QuarantineError, copy_error
from im1.ingest.load import (
    Cp1252Reader,
    HeaderError,
    StagedFile,
    claim_load_seq,
    copy_stream,
    parse_header,
    read_head,
)
from im1.ingest.model import FetchedBatch, FetchedFile, Incomplete, PlannedBatch, PlannedFile
from im1.transport.sftp import RemoteFile, SftpError
from im1.warehouse.bootstrap import META_NAMES, RAW_SCHEMAS, STAGE_SCHEMAS

log = logging.getLogger(__name__)

# the largest SRManifest.csv read (one short line per file: a real one is a few KiB); a larger one
# holds its batch instead of being read
MANIFEST_LIMIT = 1 << 22


class Adapter:
    """The organisation-extract behaviour every kind starts from."""

    def __init__(self, feed: Feed):
        self.feed = feed
        self.raw_schema = RAW_SCHEMAS[feed.supplier]

    # -- batches and organisations ---------------------------------------------------------------
    def organisations(self) -> list[str]:
        """The ledger organisations of one batch (a multi-organisation delivery adds its own row)."""
        return [o.ods_code for o in self.feed.organisations]

    @property
    def delivery_org(self) -> str | None:
        """The organisation of the delivery's own ledger row, when it has one."""
        return None

    def files_for(self, org: str, files: list):
        """Which of a batch's files belong to an organisation's ledger row."""
        return files

    def rows_into_raw(self, org: str, fetched: FetchedBatch) -> list[FetchedFile]:
        """The files whose rows an organisation's load (``*``: the delivery's stage) puts into raw."""
        return self.files_for(org, fetched.loadable)

    def plan(self, client, conn: psycopg.Connection) -> tuple[list[PlannedBatch | Incomplete], list[str]]:
        """The batches at the supplier (ready or incomplete) and the files that are no extract of this feed."""
        raise NotImplementedError

    def annotate(self, conn: psycopg.Connection, ready: list[PlannedBatch]) -> None:
        """Mark re-deliveries among the ready batches (kinds that can tell)."""

    def archive_folder(self, batch_key: str) -> str:
        """The batch's folder in the archive: one name per batch key, bounded (:func:`paths.local_name`).
        EMIS keys (``<batch>@<yyyyMMddHHmmss>``) stay readable with ``_`` for ``@`` (their grammar
        keeps that one-to-one)."""
        return paths.local_name(batch_key.replace("@", "_"))

    def is_reference(self, table: str) -> bool:
        """Reference data (lookups) the supplier sends again unchanged: no evidence that a batch
        repeats an earlier one (see :func:`im1.ingest.ledger.same_content_as`)."""
        return False

    def hold_reason(self, batch: PlannedBatch, released: bool) -> str | None:
        """Why a batch, archived, must be quarantined as delivered (None: load it)."""
        return batch.error

    # -- reading plaintext into COPY -----------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self, key: PgpKey | None) -> Iterator[object]:
        """What reading the batch's files needs for the length of one load (a keyring for PGP)."""
        yield None

    def copy_file(self, conn: psycopg.Connection, session, f: FetchedFile, file_id: int, work: Path,
                  schema: str | None = None, table: str | None = None) -> tuple[StagedFile, str | None]:
        """COPY one archived file into ``schema.<table>`` (default: the raw table); returns the staged
        file's facts and the schema version its header satisfies."""
        raise NotImplementedError

    def after_load(self, conn: psycopg.Connection, org: str, fetched: FetchedBatch, batch_id: int,
                   versions: set[str], late: bool, latest: dt.datetime | None) -> str | None:
        """Checks once every file of a batch is in (same transaction); returns the batch's version."""
        return None

    # -- multi-organisation deliveries -------------------------------------------------------------------
    needs_stage = False


# == EMIS organisation extracts =========================================================================

class EmisOrganisation(Adapter):
    """EMIS Web, one organisation: a PGP-encrypted CSV per table on an SFTP site; a batch is complete
    when every table of its schema version has arrived (EMIS sends no manifest)."""

    def plan(self, client, conn):
        remote = sorted(client.walk(self.feed.transport.path), key=lambda r: (-r.mtime, r.path))
        batches, foreign = emis.group_batches([(r.name, r) for r in remote], self.feed.sharing_agreement_guid)
        version = ledger.latest_version(conn, self.feed.id) or specs.LATEST_EMIS_VERSION
        out: list[PlannedBatch | Incomplete] = []
        for b in batches:
            if not b.is_complete(version):
                missing = b.missing_tables(version)
                out.append(Incomplete(b.key, b.extract_ts.isoformat(), missing, f"table(s) {', '.join(missing)}",
                                      expected_version=version))
                continue
            unknown = b.unknown_tables()
            files = []
            for table in sorted(set(b.files) - set(unknown)):
                r: RemoteFile = b.files[table]  # type: ignore[assignment]
                files.append(PlannedFile(table=table, name=r.name, remote_path=r.path, size=r.size))
            first = next(iter(b.names.values()))
            dup_paths = sorted({r.path for r in remote if r.name in set(b.duplicates)} - {f.remote_path for f in files})
            out.append(PlannedBatch(
                batch_key=b.key, extract_ts=b.extract_ts.isoformat(), files=files, expected_version=version,
                is_bulk=first.is_bulk,
                notes=[("duplicate copies ignored (the newest copy is used)", dup_paths),
                       ("tables not in the extract specification, archived but not loaded", unknown)]))
        return out, foreign

    @contextlib.contextmanager
    def reading(self, key):
        with Keyring() as kr:
            kr.import_key(key.secret_armored, key.passphrase)
            yield (kr, key)

    def copy_file(self, conn, session, f, file_id, work, schema=None, table=None):
        """Decrypt one archived file while COPY streams its plaintext in; the header is checked
        against the spec first and the plaintext deleted afterwards."""
        kr, key = session
        src = Path(f.archive_path)
        plain = work / (src.name[:-4] if src.name.endswith(".gpg") else src.name)
        sf = StagedFile(table=table or f.table, path=plain, file_id=file_id)
        try:
            # gpg decrypts into the private work folder while COPY streams the plaintext in
            with kr.decrypting(src, plain, passphrase=key.passphrase,
                               limit=self.feed.plaintext_limit(src.stat().st_size)) as stream:
                head = read_head(stream)
                version = self._header_version(f.table, f.name, parse_header(head, name=plain.name))
                copy_stream(conn, schema or self.raw_schema, sf, stream, head)
        except psycopg.errors.DataError as err:
            raise QuarantineError(f"{f.name}: {copy_error(err)}") from None  # the row stays out of tracebacks
        finally:
            plain.unlink(missing_ok=True)
        return sf, version

    @staticmethod
    def _header_version(table: str, file_name: str, header: list[str]) -> str:
        """The spec version the header satisfies; quarantine if a required column is missing."""
        version = specs.detect_emis_version(table, header)
        if version is None:
            oldest = specs.EMIS_VERSIONS[-1]
            missing = [c for c in specs.emis_table(table).column_names(oldest) if c not in set(header)]
            raise QuarantineError(f"{file_name}: required column(s) missing from the header: {', '.join(missing)}")
        return version

    def is_reference(self, table):
        return table in specs.EMIS_SHARED_TABLES  # organisations, locations, users, the agreement, coding

    def after_load(self, conn, org, fetched, batch_id, versions, late, latest):
        version = min(versions) if versions else None
        if version:
            check_batch_tables(fetched, version)
        return version


def check_batch_tables(fetched: FetchedBatch, version: str) -> None:
    """The batch holds every table its detected schema version expects (checked again after decrypting)."""
    present = {f.table for f in fetched.files}
    missing = sorted(set(specs.emis_expected_tables(version)) - present)
    if missing:
        raise QuarantineError(f"batch {fetched.batch_key} is spec {version} but lacks table(s) {', '.join(missing)}")


# == EMIS multi-organisation extracts ===================================================================

ORG_COLUMN = "organisationguid"
# per-practice tables without OrganisationGuid: (column, table it points at, that table's key column)
ORG_VIA = {"Appointment_SessionUser": ("sessionguid", "Appointment_Session", "appointmentsessionguid")}


class EmisMultiOrganisation(EmisOrganisation):
    """EMIS Web, a sharing agreement of several practices: one file per table covers them all.

    The delivery has its own ledger row (organisation ``*``): ``stage`` loads the **shared tables**
    (``specs.EMIS_SHARED_TABLES``: organisations, locations, users, the agreement, coding) into raw
    once and COPYs each **per-practice** file once into an UNLOGGED staging table; each practice's
    load then moves its rows (``OrganisationGuid`` = its ``supplier_org_id``; session users follow
    their session) into raw with ``INSERT ... SELECT``. Rows of organisations not in the feed
    configuration are counted in ``ingest.unclaimed_rows`` and reported, never loaded or lost.
    """

    needs_stage = True

    def organisations(self):
        return [*super().organisations(), ledger.SHARED]

    @property
    def delivery_org(self):
        return ledger.SHARED

    def files_for(self, org, files):
        # the delivery's row holds every file (shared tables are loaded from it, the rest staged)
        return files if org == ledger.SHARED else [f for f in files if f.table not in specs.EMIS_SHARED_TABLES]

    def rows_into_raw(self, org, fetched):
        return self.shared(fetched) if org == ledger.SHARED else self.per_practice(fetched)

    @property
    def stage_schema(self) -> str:
        return STAGE_SCHEMAS[self.feed.supplier]

    def stage_table(self, delivery_id: int, table: str) -> str:
        return f"d{delivery_id}__{specs.raw_table_name(table)}"

    def stage_ident(self, delivery_id: int, table: str) -> sql.Identifier:
        return sql.Identifier(self.stage_schema, self.stage_table(delivery_id, table))

    @staticmethod
    def per_practice(fetched: FetchedBatch) -> list[FetchedFile]:
        files = [f for f in fetched.files if f.table not in specs.EMIS_SHARED_TABLES]
        # sessions before session users (their organisation is found through the session)
        return sorted(files, key=lambda f: (f.table in ORG_VIA, f.table))

    @staticmethod
    def shared(fetched: FetchedBatch) -> list[FetchedFile]:
        return [f for f in fetched.files if f.table in specs.EMIS_SHARED_TABLES]

    def staged(self, conn: psycopg.Connection, delivery_id: int, fetched: FetchedBatch) -> bool:
        """The delivery's staging tables exist (they are created and filled in one transaction)."""
        files = self.per_practice(fetched)
        if not files:
            return True
        name = f"{self.stage_schema}.{self.stage_table(delivery_id, files[-1].table)}"
        return conn.execute("select to_regclass(%s) is not null", (name,)).fetchone()[0]

    def guids(self) -> dict[str, str]:
        """OrganisationGuid -> ODS code for the configured organisations."""
        return {self.feed.supplier_org_id(o): o.ods_code for o in self.feed.organisations}

    def org_filter(self, delivery: int, table: str) -> sql.Composable:
        """SQL selecting a practice's staged rows of ``table`` (params: guid, feed, ods)."""
        if table in ORG_VIA:
            col, parent, parent_key = ORG_VIA[table]
            return sql.SQL(
                "{col} in (select {pk} from {stage_parent} where {org} = %(guid)s "
                "union select {pk} from {raw_parent} where _feed_id = %(feed)s and _organisation = %(ods)s)").format(
                col=sql.Identifier(col), pk=sql.Identifier(parent_key),
                stage_parent=self.stage_ident(delivery, parent), org=sql.Identifier(ORG_COLUMN),
                raw_parent=sql.Identifier(self.raw_schema, specs.raw_table_name(parent)))
        return sql.SQL("{} = %(guid)s").format(sql.Identifier(ORG_COLUMN))

    def move_rows(self, conn: psycopg.Connection, org: str, fetched: FetchedBatch, batch_id: int) -> tuple[int, str | None]:
        """One practice's rows from staging into raw (in the caller's transaction)."""
        delivery = fetched.batch_ids[ledger.SHARED]
        guid = self.feed.supplier_org_id(next(o for o in self.feed.organisations if o.ods_code == org))
        files = {r[0]: r[1] for r in conn.execute(
            "select table_name, file_id from ingest.files where batch_id = %s", (batch_id,))}
        total, versions = 0, set()
        for f in self.per_practice(fetched):
            cols = [r[0] for r in conn.execute(
                "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
                "order by ordinal_position", (self.stage_schema, self.stage_table(delivery, f.table)))
                if r[0] not in META_NAMES]
            load_seq = claim_load_seq(conn, self.raw_schema, specs.raw_table_name(f.table))
            stmt = sql.SQL(
                "insert into {dst} ({cols}, _feed_id, _organisation, _batch_id, _file_id, _row_number, _loaded_at,"
                " _load_seq) select {cols}, %(feed)s, %(ods)s, %(batch)s, %(file)s, _row_number, now(), %(seq)s"
                " from {src} where {where}"
            ).format(dst=sql.Identifier(self.raw_schema, specs.raw_table_name(f.table)),
                     cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
                     src=self.stage_ident(delivery, f.table), where=self.org_filter(delivery, f.table))
            with conn.cursor() as cur:
                cur.execute(stmt, {"feed": self.feed.id, "ods": org, "batch": batch_id, "file": files[f.table],
                                   "guid": guid, "seq": load_seq})
                n = cur.rowcount
            # the delivered file's schema version and unknown columns (recorded when it was staged)
            file_version, unknown = ledger.staged_file(conn, delivery, f.table)
            versions.add(file_version)
            ledger.record_file_rows(conn, files[f.table], rows_in_file=n, rows_loaded=n,
                                    status=ledger.FileStatus.LOADED, schema_version=file_version,
                                    unknown_columns=unknown)
            total += n
        return total, (min(v for v in versions if v) if any(versions) else None)

    def account_unclaimed(self, conn: psycopg.Connection, delivery: int, fetched: FetchedBatch) -> int:
        """Count the staged rows no configured organisation will take; record and report them."""
        guids = self.guids()
        agreement = {
            r[0]: (r[1] or "").lower() == "true"
            for r in conn.execute(
                sql.SQL("select organisationguid, isactivated from {} where _batch_id = %s").format(
                    sql.Identifier(self.raw_schema, "agreements_sharingorganisation")), (delivery,)).fetchall()
        }
        out: dict[tuple[str, str], int] = {}
        for f in self.per_practice(fetched):
            ident = self.stage_ident(delivery, f.table)
            if f.table in ORG_VIA:
                # a session user row is unclaimed when its session belongs to no configured practice
                col, parent, parent_key = ORG_VIA[f.table]
                any_org = sql.SQL("{col} in (select {pk} from {sp} where {org} = any(%(guids)s) "
                                  "union select {pk} from {rp} where _feed_id = %(feed)s)").format(
                    col=sql.Identifier(col), pk=sql.Identifier(parent_key), sp=self.stage_ident(delivery, parent),
                    org=sql.Identifier(ORG_COLUMN), rp=sql.Identifier(self.raw_schema, specs.raw_table_name(parent)))
                n_unclaimed = conn.execute(
                    sql.SQL("select count(*) from {} where not coalesce({}, false)").format(ident, any_org),
                    {"guids": list(guids), "feed": self.feed.id}).fetchone()[0]
                rows = [("(session of no configured practice)", n_unclaimed)] if n_unclaimed else []
            else:
                rows = conn.execute(
                    sql.SQL("select coalesce({org}, ''), count(*) from {t} where coalesce({org}, '') <> all(%s) "
                            "group by 1 order by 1").format(org=sql.Identifier(ORG_COLUMN), t=ident),
                    (list(guids),)).fetchall()
            for guid, n in rows:
                out[(f.table, guid)] = n
        ledger.record_unclaimed(conn, delivery, [(t, g, n, g in agreement, agreement.get(g)) for (t, g), n in out.items()])
        if out:
            by_org: dict[str, int] = {}
            for (_t, g), n in out.items():
                by_org[g] = by_org.get(g, 0) + n
            parts = []
            for g, n in sorted(by_org.items()):
                where = ("not in Agreements_SharingOrganisation" if g not in agreement
                         else f"in Agreements_SharingOrganisation, IsActivated={'true' if agreement[g] else 'false'}")
                parts.append(f"{n} row(s) for OrganisationGuid {g or '(empty)'} ({where})")
            ledger.log_event(
                conn, f"{fetched.batch_key}: rows for organisations not in the feed configuration were not loaded "
                      f"(see ingest.unclaimed_rows; the encrypted originals stay in the archive): " + "; ".join(parts),
                feed_id=self.feed.id, batch_id=delivery, level="warning")
        for guid, ods in guids.items():
            if guid not in agreement:
                ledger.log_event(conn, f"{fetched.batch_key}: configured organisation {ods} ({guid}) is not in this "
                                 "delivery's Agreements_SharingOrganisation; it gets no rows",
                                 feed_id=self.feed.id, batch_id=delivery, level="warning")
            elif not agreement[guid]:
                ledger.log_event(conn, f"{fetched.batch_key}: configured organisation {ods} ({guid}) is not "
                                 "activated in the sharing agreement (IsActivated=false)",
                                 feed_id=self.feed.id, batch_id=delivery, level="warning")
        return sum(out.values())

    def drop_staging(self, conn: psycopg.Connection, delivery: int) -> int:
        names = [r[0] for r in conn.execute(
            "select tablename from pg_tables where schemaname = %s and tablename like %s",
            (self.stage_schema, f"d{delivery}\\_\\_%"))]
        for name in names:
            conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(self.stage_schema, name)))
        return len(names)

# == TPP SystmOne gateway ===============================================================================

class TppGateway(Adapter):
    """TPP SystmOne: batch folders of Windows-1252 CSV files plus ``SRManifest.csv`` (written last)
    in a gateway folder, local or on an SFTP site. A batch's ledger key is its folder under the
    gateway (:func:`paths.bounded_key`: a very long path gets a prefix and a hash), its extract
    time the manifest's ``DateExtractTo``; it is complete when the manifest
    and every file it names are there. A second folder with the extract time of a loaded batch is
    a re-delivery, held as a duplicate."""

    def gateway_root(self) -> str:
        if self.feed.transport.kind == "folder":
            return self.feed.transport.resolved().as_posix()
        return self.feed.transport.path

    @staticmethod
    def spec_columns(table: str) -> tuple[str, ...] | None:
        """The spec's columns of a TPP file (empty: known file, no column list; None: unknown file)."""
        f = specs.tpp_files().get(table)
        return None if f is None else f.columns

    def is_reference(self, table):
        # a file whose rows belong to no organisation (no IDOrganisationVisibleTo): SRMapping,
        # SROrganisation, SRStaffMember, ... lookups
        return specs.TPP_KEY[0] not in (self.spec_columns(table) or ())

    def required_columns(self, table: str) -> list[str]:
        """Header columns a file cannot be loaded without: the row key of the TPP file."""
        cols = self.spec_columns(table) or ()
        return [c for c in specs.TPP_KEY if c in cols]

    @staticmethod
    def _folder_ts(folder: str, items: list[RemoteFile]) -> dt.datetime:
        return tpp.folder_time(posixpath.basename(folder)) or dt.datetime.fromtimestamp(max(r.mtime for r in items))

    def _plan_files(self, manifest: tpp.Manifest, names: dict[str, RemoteFile]):
        files: list[PlannedFile] = []
        unknown: list[str] = []
        by_lower = {n.lower(): r for n, r in names.items()}
        listed = set()
        for row in manifest.rows:
            r = by_lower[f"{row.table}.csv".lower()]
            listed.add(r.name)
            cols = self.spec_columns(row.table)
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
            if table in tpp.UNLISTED and self.spec_columns(table):
                files.append(PlannedFile(table, n, r.path, r.size, None))  # sent without a manifest row
            else:
                extra.append(n)
        m = names[tpp.MANIFEST]
        files.append(PlannedFile(tpp.MANIFEST_TABLE, m.name, m.path, m.size, None, load=False, note="the manifest"))
        files.sort(key=lambda f: (f.table, f.name))
        return files, unknown, extra

    def plan(self, client, conn):
        """Each batch folder is planned on its own: one whose manifest cannot be read or trusted is
        held (quarantined when fetched) and one still missing files waits, never the whole feed."""
        root = self.gateway_root().rstrip("/") or "/"
        folders: dict[str, list[RemoteFile]] = {}
        for r in client.walk(root, special=True):  # links and FIFOs too: refused by name below
            folders.setdefault(posixpath.dirname(r.path), []).append(r)
        foreign: list[str] = []
        out: list[PlannedBatch | Incomplete] = []
        for folder, items in sorted(folders.items()):
            rel = posixpath.relpath(folder, root)
            key = paths.bounded_key(rel)  # the folder's path under the gateway, bounded
            names = {posixpath.basename(r.path): r for r in items}
            if rel == "." or not any(tpp.FILE.match(n) for n in names):
                foreign += [r.path for r in items]
                continue
            out.append(self._plan_folder(client, folder, key, names, items))
        return out, foreign

    def _plan_folder(self, client, folder: str, key: str, names: dict[str, RemoteFile],
                     items: list[RemoteFile]) -> PlannedBatch | Incomplete:
        if tpp.MANIFEST not in names:
            return Incomplete(key, self._folder_ts(folder, items).isoformat(), [tpp.MANIFEST],
                              f"{tpp.MANIFEST} (the folder is still being written: TPP writes the manifest last)")
        manifest, error = self._read_manifest(client, names)
        if manifest is None and error is None:
            return Incomplete(key, self._folder_ts(folder, items).isoformat(), [tpp.MANIFEST],
                              f"{tpp.MANIFEST} (it went away while being read: the folder is being rewritten)")
        manifest = manifest or tpp.Manifest(())
        present = {n.lower() for n in names}
        missing = [f"{t}.csv" for t in manifest.tables if f"{t}.csv".lower() not in present]
        ts = manifest.extract_to or tpp.folder_time(posixpath.basename(folder))
        if ts is None:
            ts = self._folder_ts(folder, items)
            error = error or (f"{tpp.MANIFEST} has no DateExtractTo and the folder name "
                              f"{posixpath.basename(folder)!r} is not a yyyyMMdd_HHmm time: the batch's extract "
                              "time is unknown")
        if missing and not error:
            return Incomplete(key, ts.isoformat(), missing, f"file(s) {', '.join(missing)} named in {tpp.MANIFEST}")
        if error:
            # archived as delivered (its regular files only), then quarantined
            files = [PlannedFile(tpp.MANIFEST_TABLE, n, r.path, r.size, None, load=False, note="the manifest")
                     if n == tpp.MANIFEST else
                     PlannedFile(tpp.table_of(n), n, r.path, r.size, None, load=False, note="not loaded")
                     for n, r in sorted(names.items()) if r.kind == "file"]
            unknown, extra = [], []
        else:
            files, unknown, extra = self._plan_files(manifest, names)
        frm = manifest.extract_from
        return PlannedBatch(
            batch_key=key, extract_ts=ts.isoformat(), extract_from=frm.isoformat() if frm else None,
            files=files, error=error,
            notes=[("files in the batch folder that SRManifest.csv does not list (not loaded)", extra),
                   ("files listed in SRManifest.csv that the TPP specification does not know "
                    "(archived, not loaded)", unknown)])

    @staticmethod
    def _read_manifest(client, names: dict[str, RemoteFile]) -> tuple[tpp.Manifest | None, str | None]:
        """The folder's manifest, or why it cannot be used (the batch is then held, alone): an entry
        that is not a regular file (a link, a FIFO: refused, never read), a manifest too large, not
        readable or not parseable; (None, None) when it went away between the listing and the read."""
        special = [f"{n}: {r.kind}" for n, r in sorted(names.items()) if r.kind != "file"]
        if special:
            return None, (f"{'; '.join(special)}; refused, not read (the gateway must hold regular files with "
                          "UTF-8 names, and nothing in it is read through a link)")
        m = names[tpp.MANIFEST]
        if m.size > MANIFEST_LIMIT:
            return None, (f"{tpp.MANIFEST} is {m.size} bytes, more than the {MANIFEST_LIMIT} a manifest may have "
                          "(a few hundred bytes a file): not read; ask TPP to re-send the batch, then release it")
        try:
            data = client.read_bytes(m.path, limit=MANIFEST_LIMIT)
        except FileNotFoundError:
            return None, None
        except (SftpError, PermissionError) as err:  # refused by size (it grew), or not readable
            return None, f"{tpp.MANIFEST} cannot be read ({type(err).__name__}: {err}); fix it, then release the batch"
        try:
            return tpp.parse_manifest(data), None
        except tpp.ManifestError as err:
            return None, str(err)

    def annotate(self, conn, ready):
        """A re-delivery: another folder with the extract time of a loaded (or an earlier-listed) batch."""
        first: dict[str, str] = {}
        for b in sorted(ready, key=lambda b: b.batch_key):
            if b.error:
                continue
            loaded = ledger.loaded_batch_with_extract(conn, self.feed.id, b.ts, b.batch_key)
            if loaded:
                b.duplicate_of = loaded
            elif b.extract_ts in first:
                b.duplicate_of = first[b.extract_ts]
            else:
                first[b.extract_ts] = b.batch_key

    def archive_folder(self, batch_key: str) -> str:
        # a nested folder's key holds "/": local_name makes it one bounded name, distinct from a
        # folder whose own name holds "__"
        return paths.local_name(batch_key)

    def hold_reason(self, batch, released):
        if batch.error:
            return batch.error
        if batch.duplicate_of and not released:  # a released duplicate is loaded as asked
            return (f"duplicate delivery: the extract of {batch.extract_ts} (DateExtractTo) was already delivered "
                    f"as batch {batch.duplicate_of}; release this batch to load it as well")
        return None

    def copy_file(self, conn, session, f, file_id, work, schema=None, table=None):
        """Stream one archived file into ``raw_tpp``: Windows-1252 decoded to UTF-8 on the way, header
        checked (key columns present), unknown columns (not in the TPP specification) kept and reported."""
        path = Path(f.archive_path)
        sf = StagedFile(table=table or f.table, path=path, file_id=file_id, encoding="UTF8")
        with open(path, "rb") as fh:
            reader = Cp1252Reader(fh, f.name)
            head = read_head(reader)
            header = parse_header(head, "UTF8", f.name)
            missing = [c for c in self.required_columns(f.table) if c.lower() not in {h.lower() for h in header}]
            if missing:
                raise HeaderError(f"{f.name}: required column(s) missing from the header: {', '.join(missing)}")
            try:
                copy_stream(conn, schema or self.raw_schema, sf, reader, head)
            except psycopg.errors.DataError as err:
                raise QuarantineError(f"{f.name}: {copy_error(err)}") from None  # the row stays out of tracebacks
        known = {specs.raw_column_name(c) for c in self.spec_columns(f.table) or ()}
        sf.unknown_columns = [h for h in sf.header if specs.raw_column_name(h) not in known]
        return sf, None

    def after_load(self, conn, org, fetched, batch_id, versions, late, latest):
        self._check_continuity(conn, org, fetched, batch_id)
        if late:
            row = ledger.get_batch(conn, batch_id)
            ledger.log_event(conn, f"{fetched.batch_key}: loaded late: its extract ({row.extract_ts:%Y-%m-%d %H:%M}) "
                             f"is older than one already loaded ({latest:%Y-%m-%d %H:%M}); staging applies rows in "
                             "extract order", feed_id=self.feed.id, batch_id=batch_id, level="warning")
        return None

    def _check_continuity(self, conn, org: str, fetched: FetchedBatch, batch_id: int) -> None:
        """Report a gap (DateExtractFrom after the previous loaded extract's cut-off: changes may be
        missing) or an overlap (normal after a re-bulk; rows apply in extract order, nothing doubles)."""
        if not fetched.extract_from:
            return
        frm = dt.datetime.fromisoformat(fetched.extract_from)
        prev = ledger.previous_loaded_ts(conn, self.feed.id, org, dt.datetime.fromisoformat(fetched.extract_ts))
        if prev is None:
            return
        key = fetched.batch_key
        if frm > prev:
            ledger.log_event(conn, f"{key}: gap in the extracts: DateExtractFrom {frm:%Y%m%d_%H%M} is later than the "
                             f"previous loaded extract's DateExtractTo {prev:%Y%m%d_%H%M}; changes in between may be "
                             "missing until that extract arrives (or ask the supplier for it, or a re-bulk)",
                             feed_id=self.feed.id, batch_id=batch_id, level="warning")
        elif frm < prev:
            ledger.log_event(conn, f"{key}: DateExtractFrom {frm:%Y%m%d_%H%M} overlaps the previous extract (to "
                             f"{prev:%Y%m%d_%H%M}), as after a re-bulk; rows apply in extract order",
                             feed_id=self.feed.id, batch_id=batch_id, level="info")


def adapter_for(feed: Feed) -> Adapter:
    """The adapter of the feed's delivery kind."""
    if feed.supplier == "tpp":
        if feed.extract != "organisation":
            raise NotImplementedError(f"feed {feed.id}: TPP feeds are organisation extracts (one practice per feed)")
        return TppGateway(feed)
    if feed.extract == "multi_organisation":
        return EmisMultiOrganisation(feed)
    return EmisOrganisation(feed)


def archive_root(feed: Feed) -> Path:
    return paths.state_dir() / "archive" / feed.id
