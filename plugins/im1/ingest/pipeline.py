"""How any delivery flows: discover -> wait -> fetch -> (stage) -> load -> quality, written once.

One :class:`Pipeline` per feed runs every step the same way for every delivery kind; what a kind
does differently (file names and batch grouping, completeness, how plaintext is read, which rows
belong to which organisation) is its adapter (:mod:`im1.ingest.adapters`). The steps hand each
other the typed objects of :mod:`im1.ingest.model` and keep the ledger (:mod:`im1.ingest.ledger`,
which owns every status) up to date. One policy for locks, transactions and failures:

* **locks**: one loader per feed and organisation at a time (``im1.load:<feed>:<org>``), one
  stager per multi-organisation delivery (``im1.stage:<delivery>``), taken as PostgreSQL
  advisory locks on the load's own connection, waiting at most ``lock_wait`` seconds (default
  ``IM1_LOCK_WAIT_SECONDS``, 900): then the step fails with :class:`LockWaitTimeout` naming the
  holder, leaves the batch's ledger row as it was, and Airflow retries it;
* **transactions**: a batch's rows for one organisation go into raw in one transaction together
  with its ledger row, so a killed connection or worker leaves nothing half-loaded;
* **failures**: a bad delivery (:data:`~im1.ingest.errors.QUARANTINE_ERRORS`) is quarantined with
  the reason and raises :class:`~im1.ingest.errors.QuarantineError`; any other failure marks the
  batch failed (the next run retries it) and is raised as it is. The ledger is written even when
  the load's connection died.

The Airflow DAGs (:mod:`im1.airflow.ingest`) call one step per task; the tests, benchmarks and the
demo drive the same object (:meth:`Pipeline.run_once` runs every step of one run without Airflow).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from im1 import paths, specs
from im1.config import Feed
from im1.ingest import ledger
from im1.ingest.adapters import Adapter, EmisMultiOrganisation, adapter_for, archive_root, check_batch_tables
from im1.ingest.credentials import PgpKey
from im1.ingest.errors import QUARANTINE_ERRORS, QuarantineError, carries_data, safe_text
from im1.ingest.load import set_load_context
from im1.ingest.model import Discovery, FetchedBatch, FetchedFile, Incomplete, LoadResult, PlannedBatch
from im1.transport.sftp import RemoteFile
from im1.warehouse.bootstrap import add_column

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def work_dir() -> Path:
    return paths.private_dir(paths.state_dir() / "work")


def lock_wait_seconds() -> float:
    """How long a step waits for its advisory lock (IM1_LOCK_WAIT_SECONDS, default 15 minutes)."""
    return float(os.environ.get("IM1_LOCK_WAIT_SECONDS", "900"))


class LockWaitTimeout(RuntimeError):
    """Another session held the step's advisory lock for longer than the step waits: the step
    fails (Airflow retries it) and the batch's ledger row is left as it was."""


_LOCK_HOLDERS = """
    select l.pid, a.application_name, a.usename, a.state, a.xact_start
      from pg_locks l left join pg_stat_activity a on a.pid = l.pid, (select hashtext(%s)::bigint as k) h
     where l.locktype = 'advisory' and l.granted and l.objsubid = 1
       and l.database = (select oid from pg_database where datname = current_database())
       and l.classid = ((h.k >> 32) & 4294967295)::oid and l.objid = (h.k & 4294967295)::oid
       and l.pid <> pg_backend_pid()
     order by l.pid
"""


def _lock_holders(conn: psycopg.Connection, key: str) -> str:
    """Who holds an advisory lock: pid, application_name, user, state (the query is never shown)."""
    out = []
    for pid, app, user, state, since in conn.execute(_LOCK_HOLDERS, (key,)).fetchall():
        when = f", in a transaction since {since:%Y-%m-%d %H:%M:%S %Z}" if since else ""
        out.append(f"pid {pid} (application_name {app or '(none)'!r}, user {user}, "
                   f"{state or 'state not visible'}{when})")
    return "; ".join(out) or "a session that has let it go since"


def take_lock(conn: psycopg.Connection, key: str, what: str, wait: float, *, xact: bool = False) -> None:
    """Take the advisory lock ``key`` (session-level, or until the transaction ends with ``xact``),
    trying again until ``wait`` seconds have passed; then raise :class:`LockWaitTimeout` saying
    ``what`` waited and which session holds it. Nothing waits on the server, so nothing is left
    queued behind the holder."""
    fn = "pg_try_advisory_xact_lock" if xact else "pg_try_advisory_lock"
    deadline = time.monotonic() + wait
    pause = 0.05
    while not conn.execute(f"select {fn}(hashtext(%s))", (key,)).fetchone()[0]:
        if time.monotonic() >= deadline:
            raise LockWaitTimeout(
                f"{what}: could not take the lock {key!r} within {wait:g} s; it is held by "
                f"{_lock_holders(conn, key)}. Another run may still be loading it (Airflow retries this task); "
                "if that session is stuck, end it with pg_terminate_backend(<pid>)")
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 2.0)


class Pipeline:
    """The ingest of one feed. ``conninfo`` reaches the warehouse as the loader; ``key`` decrypts
    (PGP deliveries); ``archive`` is where originals are kept (default ``<state>/archive/<feed>``)."""

    def __init__(self, feed: Feed, conninfo: str, *, key: PgpKey | None = None, archive: Path | None = None,
                 lock_wait: float | None = None):
        self.feed = feed
        self.conninfo = conninfo
        self.key = key
        self.archive = archive or archive_root(feed)
        self.adapter: Adapter = adapter_for(feed)
        self.lock_wait = lock_wait_seconds() if lock_wait is None else lock_wait

    # -- one policy for locks and failures --------------------------------------------------------------
    def _lock(self, conn: psycopg.Connection, key: str, what: str, *, xact: bool = False) -> None:
        take_lock(conn, key, f"IM1 feed {self.feed.id}: {what}", self.lock_wait, xact=xact)

    def _org_lock(self, conn: psycopg.Connection, org: str) -> None:
        """One loader per feed and organisation at a time."""
        self._lock(conn, f"im1.load:{self.feed.id}:{org}", f"the load of organisation {org}")

    def _stage_lock(self, conn: psycopg.Connection, fetched: FetchedBatch, *, xact: bool = False) -> None:
        """One stager (or staging cleanup) per multi-organisation delivery at a time."""
        delivery = fetched.batch_ids[ledger.SHARED]
        self._lock(conn, f"im1.stage:{delivery}", f"staging delivery {fetched.batch_key} (batch {delivery})",
                   xact=xact)

    def _fail(self, conn: psycopg.Connection | None, batch_ids: list[int], err: BaseException) -> None:
        """Record a failed step for its batches: quarantined when the delivery is bad, failed (to be
        retried) otherwise. Works even when ``conn`` died (e.g. it was terminated)."""
        bad = isinstance(err, QUARANTINE_ERRORS)
        reason = safe_text(err)  # a database error may quote a row: never into the ledger
        text = reason if isinstance(err, psycopg.Error) else f"{type(err).__name__}: {reason}".strip()

        def write(c: psycopg.Connection) -> None:
            for bid in batch_ids:
                if bad:
                    ledger.quarantine(c, bid, reason, feed_id=self.feed.id)
                else:
                    ledger.mark_failed(c, bid, text, feed_id=self.feed.id)
            c.commit()

        try:
            if conn is None or conn.closed or conn.broken:
                raise psycopg.OperationalError("connection not usable")
            conn.rollback()
            write(conn)
        except psycopg.Error:
            with psycopg.connect(self.conninfo) as fresh:
                write(fresh)

    @contextlib.contextmanager
    def _step(self, batch_ids: list[int], what: str) -> Iterator[list[psycopg.Connection | None]]:
        """The failure policy around a step: ``holder[0]`` is the step's connection (if any). A bad
        delivery is raised as ``QuarantineError("<what>: <reason>")``."""
        holder: list[psycopg.Connection | None] = [None]
        try:
            yield holder
        except LockWaitTimeout as err:
            self._lock_event(batch_ids, err)  # another session has the batch: its ledger row is not ours to change
            raise
        except Exception as err:
            self._fail(holder[0], batch_ids, err)
            if isinstance(err, QUARANTINE_ERRORS):
                raise QuarantineError(f"{what}: {safe_text(err)}") from (None if carries_data(err) else err)
            if carries_data(err):  # a database error quoting a row: re-raised without its text
                raise RuntimeError(f"{what}: {safe_text(err)}") from None
            raise
        finally:
            if holder[0] is not None:
                holder[0].close()

    def _lock_event(self, batch_ids: list[int], err: LockWaitTimeout) -> None:
        with psycopg.connect(self.conninfo) as conn:
            for bid in batch_ids or [None]:
                ledger.log_event(conn, str(err), feed_id=self.feed.id, batch_id=bid, level="warning")
            conn.commit()

    def batch_done(self, conn: psycopg.Connection, batch_key: str) -> bool:
        """Every organisation of the batch is loaded or quarantined (a released one is pending again)."""
        rows = ledger.batches_for_key(conn, self.feed.id, batch_key)
        return all(o in rows and rows[o].final for o in self.adapter.organisations())

    # -- discover and wait ------------------------------------------------------------------------------
    def discover(self, client, *, until: dt.datetime | None = None) -> Discovery:
        """List the landing place and plan its batches, oldest extract first.

        ``ready`` batches are complete and not done yet; ``incomplete`` ones still miss files (and are
        not quarantined for it yet).
        Batches whose extract time is at or after ``until`` (the end of the run's data interval)
        belong to a later run.
        """
        found = Discovery()
        with psycopg.connect(self.conninfo) as conn:
            candidates, found.foreign_files = self.adapter.plan(client, conn)
            for b in candidates:
                if until is not None and dt.datetime.fromisoformat(b.extract_ts) >= until:
                    found.after_interval.append(b.batch_key)
                elif self.batch_done(conn, b.batch_key):  # incl. one quarantined as incomplete: waits for a release
                    found.already_loaded.append(b.batch_key)
                elif isinstance(b, Incomplete):
                    found.incomplete.append(b)
                else:
                    found.ready.append(b)
            self.adapter.annotate(conn, found.ready)
        found.ready.sort(key=lambda b: (b.extract_ts, b.batch_key))
        found.incomplete.sort(key=lambda b: (b.extract_ts, b.batch_key))
        return found

    def _register(self, conn: psycopg.Connection, batch_key: str, ts: dt.datetime,
                  file_count) -> dict[str, ledger.BatchRow]:
        """The batch's ledger rows, one per organisation (the delivery's own row first)."""
        rows: dict[str, ledger.BatchRow] = {}
        delivery = None
        if self.adapter.delivery_org:
            rows[self.adapter.delivery_org] = ledger.register_batch(
                conn, feed_id=self.feed.id, supplier=self.feed.supplier, batch_key=batch_key,
                organisation=self.adapter.delivery_org, extract_ts=ts, file_count=file_count(self.adapter.delivery_org))
            delivery = rows[self.adapter.delivery_org].batch_id
        for org in self.adapter.organisations():
            if org not in rows:
                rows[org] = ledger.register_batch(
                    conn, feed_id=self.feed.id, supplier=self.feed.supplier, batch_key=batch_key, organisation=org,
                    extract_ts=ts, file_count=file_count(org), delivery_batch_id=delivery)
        return rows

    def quarantine_incomplete(self, incomplete: list[Incomplete], waited: str) -> str:
        """At the batch deadline: quarantine each incomplete batch (for every organisation) naming
        what is missing, and return the alert text."""
        lines = []
        with psycopg.connect(self.conninfo) as conn:
            for b in incomplete:
                spec = f" (spec {b.expected_version})" if b.expected_version else ""
                reason = (f"incomplete batch: {b.what} still missing after {waited}{spec}; "
                          "once the supplier delivers them, release the batch")
                for row in self._register(conn, b.batch_key, dt.datetime.fromisoformat(b.extract_ts),
                                          lambda _org: None).values():
                    if not row.final:
                        ledger.quarantine(conn, row.batch_id, reason, feed_id=self.feed.id)
                lines.append(f"{b.batch_key}: missing {', '.join(b.missing)}")
            conn.commit()
        return (f"IM1 feed {self.feed.id}: batch(es) still incomplete after {waited}: " + "; ".join(lines)
                + " - quarantined; release them once the missing files are delivered")

    # -- fetch -----------------------------------------------------------------------------------------
    def fetch(self, client, batch: PlannedBatch) -> FetchedBatch:
        """Download every file of the batch into the archive (the originals are kept) and record it.

        A file already archived for this batch with the same size and checksum is not downloaded
        again, unless the batch was released (the supplier may have re-delivered it under the same
        name). A batch the adapter holds (an untrustworthy manifest, a re-delivery) is quarantined
        here, after archiving it; so is a batch with a file the transport refuses (a link, a FIFO:
        no retry can fix it), and the run goes on with the other batches. Local names are bounded
        (:func:`paths.local_name`): the supplier chooses the names.
        """
        dest_dir = paths.private_dir(paths.private_dir(self.archive) / self.adapter.archive_folder(batch.batch_key))
        with psycopg.connect(self.conninfo) as conn:
            rows = self._register(conn, batch.batch_key, batch.ts,
                                  lambda org: len([f for f in self.adapter.files_for(org, batch.files) if f.load]))
            for row in rows.values():
                if row.extract_ts != batch.ts and not row.final:
                    # first registered with a guess (incomplete at the deadline); the batch says better
                    ledger.correct_extract_ts(conn, row.batch_id, batch.ts)
            batch_ids = {o: r.batch_id for o, r in rows.items()}
            released = any(r.status == ledger.RELEASED for r in rows.values())
            any_id = next(iter(batch_ids.values()))
            for what, names in batch.notes:
                if names:
                    ledger.log_event(conn, f"{batch.batch_key}: {what}: {', '.join(names)}", feed_id=self.feed.id,
                                     batch_id=any_id, level="warning")
            conn.commit()
            out: list[FetchedFile] = []
            refused = None  # why a file of this delivery cannot be fetched as it is (no retry can fix it)
            for pf in batch.files:
                dest = dest_dir / paths.local_name(pf.name)  # bounded: the name is the supplier's
                known = ledger.file_checksum(conn, any_id, pf.name)
                if (not released and known and dest.exists() and dest.stat().st_size == pf.size == known[1]
                        and sha256_of(dest) == known[0]):
                    log.info("%s of %s already archived with the same checksum; not fetched again", pf.name,
                             batch.batch_key)
                    digest = known[0]
                else:
                    try:
                        client.download(RemoteFile(pf.remote_path, pf.size, 0), dest)
                    except QUARANTINE_ERRORS as err:
                        # this batch only: it is quarantined below, the other batches are fetched
                        refused = f"fetch refused: {err}"
                        break
                    except Exception as err:
                        ledger.log_event(conn, f"fetch of {pf.remote_path} failed: {type(err).__name__}: {err} "
                                         "(the next attempt resumes the partial download)",
                                         feed_id=self.feed.id, batch_id=any_id, level="error")
                        conn.commit()
                        raise
                    digest = sha256_of(dest)
                    if known and digest != known[0]:
                        ledger.log_event(conn, f"{batch.batch_key}/{pf.name}: re-fetched with a new checksum "
                                         f"{digest[:12]} (was {known[0][:12]})", feed_id=self.feed.id,
                                         batch_id=any_id, level="warning")
                for org, bid in batch_ids.items():
                    if pf in self.adapter.files_for(org, batch.files):
                        ledger.record_fetched_file(
                            conn, batch_id=bid, file_name=pf.name, table_name=pf.table, remote_path=pf.remote_path,
                            archive_path=str(dest), size=pf.size, sha256=digest, is_delta=pf.is_delta,
                            not_loaded=None if pf.load else (pf.note or "not loaded"))
                out.append(FetchedFile(table=pf.table, name=pf.name, archive_path=str(dest), sha256=digest,
                                       remote_path=pf.remote_path, is_delta=pf.is_delta, load=pf.load))
            reason = refused or self.adapter.hold_reason(batch, released)
            for bid in batch_ids.values():
                if ledger.get_batch(conn, bid).final:
                    continue
                if reason:
                    ledger.quarantine(conn, bid, reason, feed_id=self.feed.id)
                else:
                    ledger.mark_fetched(conn, bid)
            conn.commit()
        return FetchedBatch(batch_key=batch.batch_key, extract_ts=batch.extract_ts, batch_ids=batch_ids, files=out,
                            extract_from=batch.extract_from, expected_version=batch.expected_version, error=reason)

    # -- stage (multi-organisation deliveries) ---------------------------------------------------------------
    def stage(self, fetched: FetchedBatch) -> dict:
        """Load a multi-organisation delivery's shared tables into raw and COPY its per-practice
        files into staging, once. Idempotent; a bad delivery quarantines the delivery and every
        organisation's batch. A no-op for the other kinds."""
        ad = self.adapter
        if not isinstance(ad, EmisMultiOrganisation):
            return {"staged": False}
        ids = fetched.batch_ids
        delivery = ids[ledger.SHARED]
        orgs = {k: v for k, v in ids.items() if k != ledger.SHARED}
        t0 = time.monotonic()
        pending: list[int] = []
        work = Path(tempfile.mkdtemp(prefix=f"{self.feed.id}-d{delivery}-", dir=work_dir()))
        try:
            with self._step(pending, f"delivery {fetched.batch_key} of {self.feed.id} quarantined for every "
                                     "organisation") as h:
                conn = h[0] = psycopg.connect(self.conninfo)
                self._stage_lock(conn, fetched)
                rows = {o: ledger.get_batch(conn, b) for o, b in ids.items()}
                orgs_pending = [o for o in orgs if not rows[o].final]
                need_shared = not rows[ledger.SHARED].final
                need_stage = bool(orgs_pending) and not ad.staged(conn, delivery, fetched)
                conn.commit()
                if not need_shared and not need_stage:
                    return {"delivery_batch_id": delivery, "staged": False, "shared_rows": 0, "staged_rows": {},
                            "unclaimed_rows": 0}
                pending += ([delivery] if need_shared else []) + [ids[o] for o in orgs_pending]
                if need_shared:
                    ledger.start_loading(conn, delivery, is_late=False)
                    conn.commit()
                fids = ledger.file_ids(conn, delivery)
                shared_total, versions, counts, unclaimed = 0, set(), {}, 0
                with ad.reading(self.key) as session, conn.transaction():
                    set_load_context(conn, feed_id=self.feed.id, organisation=ledger.SHARED, batch_id=delivery)
                    if need_shared:
                        for f in ad.shared(fetched):
                            sf, version = ad.copy_file(conn, session, f, fids[f.name], work)
                            versions.add(version)
                            shared_total += sf.rows
                            self._record_file(conn, delivery, f.name, sf, version, ledger.FileStatus.LOADED)
                    if need_stage:
                        for f in ad.per_practice(fetched):
                            ident = ad.stage_ident(delivery, f.table)
                            raw_table = sql.Identifier(ad.raw_schema, specs.raw_table_name(f.table))
                            conn.execute(sql.SQL("drop table if exists {}").format(ident))
                            conn.execute(sql.SQL("create unlogged table {} (like {} including defaults)").format(
                                ident, raw_table))
                            sf, version = ad.copy_file(conn, session, f, fids[f.name], work, schema=ad.stage_schema,
                                                       table=ad.stage_table(delivery, f.table))
                            versions.add(version)
                            counts[f.table] = sf.rows
                            # unknown columns are kept: raw gets them now, before the practices move rows
                            for col in sf.unknown_columns:
                                add_column(conn, ad.raw_schema, specs.raw_table_name(f.table),
                                           specs.raw_column_name(col))
                            self._record_file(conn, delivery, f.name, sf, version, ledger.FileStatus.STAGED)
                    version = min(v for v in versions if v) if any(versions) else None
                    if version:
                        check_batch_tables(fetched, version)
                    if need_shared:
                        self._refuse_resend(conn, rows[ledger.SHARED], fetched)
                    if need_stage:
                        unclaimed = ad.account_unclaimed(conn, delivery, fetched)
                    if need_shared:
                        ledger.mark_loaded(conn, delivery, rows=shared_total, schema_version=version)
                conn.commit()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        secs = time.monotonic() - t0
        log.info("staged delivery %s: %d shared rows, per-practice %s in %.1fs", fetched.batch_key, shared_total,
                 counts, secs)
        return {"delivery_batch_id": delivery, "staged": need_stage, "shared_rows": shared_total,
                "staged_rows": counts, "unclaimed_rows": unclaimed, "seconds": round(secs, 3)}

    def _record_file(self, conn, batch_id: int, name: str, sf, version: str | None, status) -> None:
        rows_loaded = sf.rows if status == ledger.FileStatus.LOADED else 0
        ledger.record_file_rows(conn, sf.file_id, rows_in_file=sf.rows, rows_loaded=rows_loaded, status=status,
                                schema_version=version, unknown_columns=sf.unknown_columns, seconds=sf.seconds,
                                plain_sha256=sf.plain_sha256)
        if sf.unknown_columns:
            ledger.log_event(conn, f"{name}: column(s) not in the {self.feed.supplier.upper()} specification, "
                             f"kept: {', '.join(sf.unknown_columns)}",
                             feed_id=self.feed.id, batch_id=batch_id, level="warning")

    def cleanup(self, fetched: FetchedBatch, *, force: bool = False) -> bool:
        """Drop a multi-organisation delivery's staging once no organisation needs it (or when
        ``force``); it is rebuilt from the archive if one does later. True if tables were dropped."""
        ad = self.adapter
        if not isinstance(ad, EmisMultiOrganisation):
            return False
        delivery = fetched.batch_ids[ledger.SHARED]
        with psycopg.connect(self.conninfo) as conn:
            self._stage_lock(conn, fetched, xact=True)
            pending = [o for o, b in fetched.batch_ids.items()
                       if o != ledger.SHARED and not ledger.get_batch(conn, b).final]
            if pending and not force:
                return False
            dropped = ad.drop_staging(conn, delivery)
            conn.commit()
        if dropped:
            log.info("dropped %d staging table(s) of delivery %s", dropped, fetched.batch_key)
        return bool(dropped)

    # -- load ------------------------------------------------------------------------------------------
    def load(self, org: str, fetched: FetchedBatch) -> LoadResult:
        """Put one organisation's rows of a fetched batch into raw, in one transaction with its ledger
        row (all or nothing). Skipped when already loaded or quarantined (and not released)."""
        ad = self.adapter
        batch_id = int(fetched.batch_ids[org])
        if isinstance(ad, EmisMultiOrganisation):
            self._ensure_staged(fetched)
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f"{self.feed.id}-{batch_id}-", dir=work_dir()))
        try:
            with self._step([batch_id], f"batch {fetched.batch_key} for {org} quarantined") as h:
                conn = h[0] = psycopg.connect(self.conninfo)
                self._org_lock(conn, org)
                row = ledger.get_batch(conn, batch_id)
                if row.status == ledger.QUARANTINED and fetched.error:
                    conn.commit()  # quarantined by this run's fetch (untrustworthy manifest, re-delivery): say so
                    raise QuarantineError(fetched.error)
                if row.final:
                    log.info("batch %s for %s is %s; nothing to do", row.batch_key, org, row.status)
                    conn.commit()
                    return LoadResult(batch_id, org, 0, row.status, skipped=True)
                latest = ledger.latest_loaded_ts(conn, self.feed.id, org)
                late = latest is not None and latest > row.extract_ts
                ledger.start_loading(conn, batch_id, is_late=late)
                conn.commit()
                with conn.transaction():
                    if isinstance(ad, EmisMultiOrganisation):
                        total, version = ad.move_rows(conn, org, fetched, batch_id)
                    else:
                        total, version = self._copy_files(conn, org, fetched, row, work, late, latest)
                    ledger.mark_loaded(conn, batch_id, rows=total, schema_version=version)
                conn.commit()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if isinstance(ad, EmisMultiOrganisation):
            try:
                self.cleanup(fetched)
            except LockWaitTimeout as err:  # the load is in; the cleanup task (or the next load) drops it
                log.warning("staging of %s left in place: %s", fetched.batch_key, err)
        secs = time.monotonic() - t0
        log.info("loaded batch %s for %s: %d rows in %.1fs", fetched.batch_key, org, total, secs)
        return LoadResult(batch_id, org, total, ledger.LOADED, late=late, seconds=round(secs, 3))

    def _copy_files(self, conn, org, fetched: FetchedBatch, row: ledger.BatchRow, work: Path, late, latest):
        ad = self.adapter
        batch_id = row.batch_id
        fids = ledger.file_ids(conn, batch_id)
        total, versions = 0, set()
        with ad.reading(self.key) as session:
            set_load_context(conn, feed_id=self.feed.id, organisation=org, batch_id=batch_id)
            for f in ad.rows_into_raw(org, fetched):
                sf, version = ad.copy_file(conn, session, f, int(fids[f.name]), work)
                versions.add(version)
                self._record_file(conn, batch_id, f.name, sf, version, ledger.FileStatus.LOADED)
                total += sf.rows
        self._refuse_resend(conn, row, fetched)
        version = ad.after_load(conn, org, fetched, batch_id, {v for v in versions if v}, late, latest)
        return total, version

    def _refuse_resend(self, conn, row: ledger.BatchRow, fetched: FetchedBatch) -> None:
        """Quarantine a batch whose content is already loaded under another name (the same files
        re-sent with another batch number or in another folder, or encrypted again): its files were
        just hashed on their way into COPY, and :func:`ledger.same_content_as` compares them, table by
        table, with the organisation's loaded batches (the rule is explained there). Raised inside
        the load's transaction, so nothing of it stays in raw. A released batch is loaded as asked."""
        if row.released_at is not None:
            return
        ignore = sorted({f.table for f in fetched.files if self.adapter.is_reference(f.table)})
        earlier = ledger.same_content_as(conn, row.batch_id, ignore_tables=ignore)
        if earlier:
            raise QuarantineError(
                f"duplicate delivery: every data file of {fetched.batch_key} that has rows has the same content "
                f"(plaintext sha256, table by table) as already loaded as batch {earlier}; nothing of it was "
                "loaded; release this batch to load it again")

    def _ensure_staged(self, fetched: FetchedBatch) -> None:
        """Multi-organisation: staging was cleaned up (or never finished): rebuild it from the archive
        (a bad delivery is quarantined by :meth:`stage` itself, for every organisation)."""
        ad = self.adapter
        delivery = fetched.batch_ids[ledger.SHARED]
        with psycopg.connect(self.conninfo) as conn:
            ready = (ledger.get_batch(conn, delivery).status == ledger.LOADED
                     and ad.staged(conn, delivery, fetched))  # type: ignore[attr-defined]
        if not ready:
            self.stage(fetched)

    # -- quality ---------------------------------------------------------------------------------------
    def quality(self, org: str, fetched: list[FetchedBatch]):
        """Great Expectations checks of the organisation's loaded batches (a failed one is quarantined
        and its rows removed; raises :class:`~im1.ingest.quality.QualityError`)."""
        from im1.ingest import quality

        return quality.check_batches([int(b.batch_ids[org]) for b in fetched if org in b.batch_ids], self.conninfo)

    # -- one run without Airflow -------------------------------------------------------------------------
    def run_once(self, client, *, until: dt.datetime | None = None, quality: bool = False) -> list:
        """discover -> fetch -> stage -> load (-> quality) for every ready batch, as the DAG's tasks do.

        Returns each organisation's load result (or the :class:`QuarantineError` it raised), oldest
        batch first; with ``quality``, then each organisation's ``QualityError`` if its checks failed.
        """
        found = self.discover(client, until=until)
        fetched = [self.fetch(client, b) for b in found.ready]
        out: list = []
        for b in sorted(fetched, key=lambda x: x.extract_ts):
            try:
                self.stage(b)
                for org in self.adapter.organisations():
                    if org != ledger.SHARED:
                        out.append(self.load(org, b))
            except QuarantineError as err:
                out.append(err)
        if quality:
            from im1.ingest.quality import QualityError

            for org in self.adapter.organisations():
                try:
                    self.quality(org, fetched)
                except QualityError as err:
                    out.append(err)
        return out
