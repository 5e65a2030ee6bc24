"""Multi-organisation EMIS deliveries: one file per table covers every practice of the agreement.

How a delivery is loaded (each step is one transaction, so nothing is ever half-applied):

1. :func:`stage` (once per delivery) decrypts every file while COPY streams it in:

   * **shared tables** (``specs.EMIS_SHARED_TABLES``: organisations, locations, users, the
     sharing agreement, coding) go straight into ``raw_emis`` once, stamped with organisation
     ``'*'`` and the delivery's own ledger row (``ingest.batches.organisation = '*'``);
   * **per-practice tables** go into UNLOGGED tables ``stage_emis.d<delivery>__<table>`` with the
     file's ``_row_number`` kept;
   * rows whose ``OrganisationGuid`` is not a configured organisation are counted per table and
     organisation in ``ingest.unclaimed_rows`` and reported as a ledger event (with whether the
     organisation is in ``Agreements_SharingOrganisation`` and activated). They are not loaded
     into raw; the encrypted original stays in the archive.

2. :func:`load_org` (once per organisation) moves that practice's rows from staging into raw
   with ``INSERT ... SELECT`` (``OrganisationGuid`` = the configured ``supplier_org_id``), in its
   own transaction together with its ledger row. ``Appointment_SessionUser`` has no
   ``OrganisationGuid``: a row belongs to the practice whose ``Appointment_Session`` it names
   (in this delivery or already in raw).

3. :func:`cleanup` drops the staging tables once no organisation of the delivery is pending.
   If staging is gone when an organisation still needs it (a retry, a released batch), it is
   rebuilt from the archive.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from im1 import specs
from im1.config import Feed
from im1.crypto import Keyring
from im1.ingest import ledger
from im1.ingest.credentials import PgpKey
from im1.ingest.emis_pipeline import (
    QUARANTINE_ERRORS,
    QuarantineError,
    check_batch_tables,
    decrypt_and_copy,
    record_failure,
    work_dir,
)
from im1.ingest.load import claim_load_seq, set_load_context
from im1.warehouse.bootstrap import META_NAMES, RAW_SCHEMAS, STAGE_SCHEMAS

log = logging.getLogger(__name__)

ORG_COLUMN = "organisationguid"
# per-practice tables without OrganisationGuid: (column, table it points at, that table's key column)
ORG_VIA = {"Appointment_SessionUser": ("sessionguid", "Appointment_Session", "appointmentsessionguid")}


class _StageFailed(Exception):
    """stage() failed transiently while called from load_org (stage already recorded it)."""


def stage_table(delivery_id: int, table: str) -> str:
    return f"d{delivery_id}__{specs.raw_table_name(table)}"


def _stage_ident(feed: Feed, delivery_id: int, table: str) -> sql.Identifier:
    return sql.Identifier(STAGE_SCHEMAS[feed.supplier], stage_table(delivery_id, table))


def _per_practice(fetched: dict) -> list[dict]:
    files = [f for f in fetched["files"] if f["table"] not in specs.EMIS_SHARED_TABLES]
    # sessions before session users (their organisation is found through the session)
    return sorted(files, key=lambda f: (f["table"] in ORG_VIA, f["table"]))


def _shared(fetched: dict) -> list[dict]:
    return [f for f in fetched["files"] if f["table"] in specs.EMIS_SHARED_TABLES]


def staged(conn: psycopg.Connection, feed: Feed, delivery_id: int, fetched: dict) -> bool:
    """The delivery's staging tables exist (they are created and filled in one transaction)."""
    files = _per_practice(fetched)
    if not files:
        return True
    name = f"{STAGE_SCHEMAS[feed.supplier]}.{stage_table(delivery_id, files[-1]['table'])}"
    return conn.execute("select to_regclass(%s) is not null", (name,)).fetchone()[0]


def _guids(feed: Feed) -> dict[str, str]:
    """OrganisationGuid -> ODS code for the configured organisations."""
    return {feed.supplier_org_id(o): o.ods_code for o in feed.organisations}


def stage(feed: Feed, fetched: dict, key: PgpKey, conninfo: str) -> dict:
    """Load the delivery's shared tables into raw and COPY its per-practice files into staging.

    Idempotent: does nothing when the shared tables are loaded and staging is in place (or no
    organisation still needs it). A bad delivery quarantines the delivery and every
    organisation's batch with the reason and raises :class:`QuarantineError`.
    """
    ids = {k: int(v) for k, v in fetched["batch_ids"].items()}
    delivery = ids[ledger.SHARED]
    orgs = {k: v for k, v in ids.items() if k != ledger.SHARED}
    t0 = time.monotonic()
    conn = psycopg.connect(conninfo)
    work = Path(tempfile.mkdtemp(prefix=f"{feed.id}-d{delivery}-", dir=work_dir()))
    pending: list[int] = []
    try:
        conn.execute("select pg_advisory_lock(hashtext(%s))", (f"im1.stage:{delivery}",))
        rows = {o: ledger.get_batch(conn, b) for o, b in ids.items()}
        shared_row = rows[ledger.SHARED]
        orgs_pending = [o for o in orgs if not rows[o].final]
        need_shared = not shared_row.final
        need_stage = bool(orgs_pending) and not staged(conn, feed, delivery, fetched)
        conn.commit()
        if not need_shared and not need_stage:
            return {"delivery_batch_id": delivery, "staged": False, "shared_rows": 0, "staged_rows": {},
                    "unclaimed_rows": 0}
        pending = [delivery] if need_shared else []
        pending += [ids[o] for o in orgs_pending]
        if need_shared:
            ledger.set_status(conn, delivery, ledger.LOADING)
            conn.commit()
        file_ids = dict(conn.execute("select file_name, file_id from ingest.files where batch_id = %s",
                                     (delivery,)).fetchall())
        raw = RAW_SCHEMAS[feed.supplier]
        stage_schema = STAGE_SCHEMAS[feed.supplier]
        shared_total = 0
        versions: set[str] = set()
        counts: dict[str, int] = {}
        with Keyring() as kr:
            kr.import_key(key.secret_armored, key.passphrase)
            with conn.transaction():
                set_load_context(conn, feed_id=feed.id, organisation=ledger.SHARED, batch_id=delivery)
                if need_shared:
                    for f in _shared(fetched):
                        n, version, sf = decrypt_and_copy(conn, kr, key, raw, f, work, int(file_ids[f["name"]]))
                        versions.add(version)
                        shared_total += n
                        ledger.record_file_rows(conn, sf.file_id, rows_in_file=n, rows_loaded=n, status="loaded",
                                                schema_version=version, unknown_columns=sf.unknown_columns,
                                                seconds=sf.seconds)
                        _report_unknown(conn, feed, delivery, f["name"], sf.unknown_columns)
                if need_stage:
                    for f in _per_practice(fetched):
                        ident = _stage_ident(feed, delivery, f["table"])
                        conn.execute(sql.SQL("drop table if exists {}").format(ident))
                        conn.execute(sql.SQL("create unlogged table {} (like {} including defaults)").format(
                            ident, sql.Identifier(raw, specs.raw_table_name(f["table"]))))
                        n, version, sf = decrypt_and_copy(conn, kr, key, stage_schema, f, work,
                                                          int(file_ids[f["name"]]),
                                                          table=stage_table(delivery, f["table"]))
                        versions.add(version)
                        counts[f["table"]] = n
                        # unknown columns are kept: raw gets them now, before the practices move rows
                        for col in sf.unknown_columns:
                            conn.execute(sql.SQL("alter table {} add column if not exists {} text").format(
                                sql.Identifier(raw, specs.raw_table_name(f["table"])),
                                sql.Identifier(specs.raw_column_name(col))))
                        ledger.record_file_rows(conn, sf.file_id, rows_in_file=n, rows_loaded=0, status="staged",
                                                schema_version=version, unknown_columns=sf.unknown_columns,
                                                seconds=sf.seconds)
                        _report_unknown(conn, feed, delivery, f["name"], sf.unknown_columns)
                version = min(versions) if versions else None
                if version:
                    check_batch_tables(fetched, version)
                unclaimed = _account(conn, feed, delivery, fetched) if need_stage else {}
                if need_shared:
                    ledger.set_status(conn, delivery, ledger.LOADED, rows_loaded=shared_total, schema_version=version)
        conn.commit()
    except Exception as err:
        record_failure(conninfo, conn, pending, err, feed.id)
        if isinstance(err, QUARANTINE_ERRORS):
            raise QuarantineError(f"delivery {fetched['batch_key']} of {feed.id} quarantined for every "
                                  f"organisation: {err}") from err
        raise
    finally:
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    secs = time.monotonic() - t0
    log.info("staged delivery %s: %d shared rows, per-practice %s in %.1fs", fetched["batch_key"], shared_total,
             counts, secs)
    return {"delivery_batch_id": delivery, "staged": need_stage, "shared_rows": shared_total,
            "staged_rows": counts, "unclaimed_rows": sum(unclaimed.values()), "seconds": round(secs, 3)}


def _report_unknown(conn, feed: Feed, batch_id: int, name: str, unknown: list[str]) -> None:
    if unknown:
        ledger.log_event(conn, f"{name}: unknown column(s) kept: {', '.join(unknown)}", feed_id=feed.id,
                         batch_id=batch_id, level="warning")


def _org_filter(feed: Feed, delivery: int, table: str) -> tuple[sql.Composable, str]:
    """SQL selecting a practice's staged rows of ``table`` (params: guid, feed id, ods code)."""
    if table in ORG_VIA:
        col, parent, parent_key = ORG_VIA[table]
        return (
            sql.SQL("{col} in (select {pk} from {stage_parent} where {org} = %(guid)s "
                    "union select {pk} from {raw_parent} where _feed_id = %(feed)s and _organisation = %(ods)s)").format(
                col=sql.Identifier(col), pk=sql.Identifier(parent_key),
                stage_parent=_stage_ident(feed, delivery, parent), org=sql.Identifier(ORG_COLUMN),
                raw_parent=sql.Identifier(RAW_SCHEMAS[feed.supplier], specs.raw_table_name(parent))),
            col,
        )
    return sql.SQL("{} = %(guid)s").format(sql.Identifier(ORG_COLUMN)), ORG_COLUMN


def _account(conn: psycopg.Connection, feed: Feed, delivery: int, fetched: dict) -> dict[tuple[str, str], int]:
    """Count the staged rows no configured organisation will take; record and report them."""
    guids = _guids(feed)
    agreement = {
        r[0]: (r[1] or "").lower() == "true"
        for r in conn.execute(
            sql.SQL("select organisationguid, isactivated from {} where _batch_id = %s").format(
                sql.Identifier(RAW_SCHEMAS[feed.supplier], "agreements_sharingorganisation")),
            (delivery,),
        ).fetchall()
    }
    out: dict[tuple[str, str], int] = {}
    conn.execute("delete from ingest.unclaimed_rows where batch_id = %s", (delivery,))
    for f in _per_practice(fetched):
        table = f["table"]
        ident = _stage_ident(feed, delivery, table)
        if table in ORG_VIA:
            # a session user row is unclaimed when its session belongs to no configured practice
            col, parent, parent_key = ORG_VIA[table]
            any_org = sql.SQL("{col} in (select {pk} from {sp} where {org} = any(%(guids)s) "
                              "union select {pk} from {rp} where _feed_id = %(feed)s)").format(
                col=sql.Identifier(col), pk=sql.Identifier(parent_key), sp=_stage_ident(feed, delivery, parent),
                org=sql.Identifier(ORG_COLUMN),
                rp=sql.Identifier(RAW_SCHEMAS[feed.supplier], specs.raw_table_name(parent)))
            n_unclaimed = conn.execute(
                sql.SQL("select count(*) from {} where not coalesce({}, false)").format(ident, any_org),
                {"guids": list(guids), "feed": feed.id},
            ).fetchone()[0]
            rows = [("(session of no configured practice)", n_unclaimed)] if n_unclaimed else []
        else:
            rows = conn.execute(
                sql.SQL("select coalesce({org}, ''), count(*) from {t} where coalesce({org}, '') <> all(%s) "
                        "group by 1 order by 1").format(org=sql.Identifier(ORG_COLUMN), t=ident),
                (list(guids),),
            ).fetchall()
        for guid, n in rows:
            out[(table, guid)] = n
            conn.execute(
                """insert into ingest.unclaimed_rows (batch_id, table_name, organisation_guid, rows, in_agreement,
                                                       is_activated) values (%s, %s, %s, %s, %s, %s)""",
                (delivery, table, guid, n, guid in agreement, agreement.get(guid)),
            )
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
            conn,
            f"{fetched['batch_key']}: rows for organisations not in the feed configuration were not loaded "
            f"(see ingest.unclaimed_rows; the encrypted originals stay in the archive): " + "; ".join(parts),
            feed_id=feed.id, batch_id=delivery, level="warning",
        )
    for guid, ods in guids.items():
        if guid not in agreement:
            ledger.log_event(conn, f"{fetched['batch_key']}: configured organisation {ods} ({guid}) is not in this "
                             "delivery's Agreements_SharingOrganisation; it gets no rows",
                             feed_id=feed.id, batch_id=delivery, level="warning")
        elif not agreement[guid]:
            ledger.log_event(conn, f"{fetched['batch_key']}: configured organisation {ods} ({guid}) is not "
                             "activated in the sharing agreement (IsActivated=false)",
                             feed_id=feed.id, batch_id=delivery, level="warning")
    return out


def load_org(feed: Feed, ods_code: str, fetched: dict, key: PgpKey, conninfo: str) -> dict:
    """Move one practice's rows of a staged delivery into raw, in one transaction with its ledger row."""
    ids = {k: int(v) for k, v in fetched["batch_ids"].items()}
    batch_id, delivery = ids[ods_code], ids[ledger.SHARED]
    guid = feed.supplier_org_id(next(o for o in feed.organisations if o.ods_code == ods_code))
    raw = RAW_SCHEMAS[feed.supplier]
    t0 = time.monotonic()
    conn = None
    try:
        conn = psycopg.connect(conninfo)
        conn.execute("select pg_advisory_lock(hashtext(%s))", (f"im1.load:{feed.id}:{ods_code}",))
        row = ledger.get_batch(conn, batch_id)
        if row.final:
            conn.commit()
            return {"batch_id": batch_id, "ods_code": ods_code, "rows": 0, "skipped": True, "status": row.status}
        shared = ledger.get_batch(conn, delivery)
        ready = shared.status == ledger.LOADED and staged(conn, feed, delivery, fetched)
        conn.commit()
        if not ready:
            # staging was cleaned up (or never finished): rebuild it from the archive (a bad
            # delivery is quarantined by stage() itself, for every organisation)
            conn.close()
            conn = None
            try:
                stage(feed, fetched, key, conninfo)
            except QuarantineError:
                raise
            except Exception as err:
                raise _StageFailed(err) from err
            conn = psycopg.connect(conninfo)
            conn.execute("select pg_advisory_lock(hashtext(%s))", (f"im1.load:{feed.id}:{ods_code}",))
            row = ledger.get_batch(conn, batch_id)
            if row.final:
                conn.commit()
                return {"batch_id": batch_id, "ods_code": ods_code, "rows": 0, "skipped": True,
                        "status": row.status}
        latest = ledger.latest_loaded_ts(conn, feed.id, ods_code)
        late = latest is not None and latest > row.extract_ts
        ledger.set_status(conn, batch_id, ledger.LOADING, is_late=late)
        conn.commit()
        files = {r[0]: (r[1], r[2]) for r in conn.execute(
            "select table_name, file_id, schema_version from ingest.files where batch_id = %s", (batch_id,))}
        total = 0
        versions = set()
        with conn.transaction():
            for f in _per_practice(fetched):
                table = f["table"]
                file_id, _ = files[table]
                src = _stage_ident(feed, delivery, table)
                cols = [r[0] for r in conn.execute(
                    "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
                    "order by ordinal_position", (STAGE_SCHEMAS[feed.supplier], stage_table(delivery, table)))
                    if r[0] not in META_NAMES]
                where, _ = _org_filter(feed, delivery, table)
                load_seq = claim_load_seq(conn, raw, specs.raw_table_name(table))
                stmt = sql.SQL(
                    "insert into {dst} ({cols}, _feed_id, _organisation, _batch_id, _file_id, _row_number, _loaded_at,"
                    " _load_seq) select {cols}, %(feed)s, %(ods)s, %(batch)s, %(file)s, _row_number, now(), %(seq)s"
                    " from {src} where {where}"
                ).format(dst=sql.Identifier(raw, specs.raw_table_name(table)),
                         cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols), src=src, where=where)
                with conn.cursor() as cur:
                    cur.execute(stmt, {"feed": feed.id, "ods": ods_code, "batch": batch_id, "file": file_id,
                                       "guid": guid, "seq": load_seq})
                    n = cur.rowcount
                # the delivered file's schema version and unknown columns (recorded when it was staged)
                file_version, unknown = conn.execute(
                    "select schema_version, unknown_columns from ingest.files where batch_id = %s and table_name = %s",
                    (delivery, table)).fetchone()
                versions.add(file_version)
                ledger.record_file_rows(conn, file_id, rows_in_file=n, rows_loaded=n, status="loaded",
                                        schema_version=file_version, unknown_columns=unknown)
                total += n
            version = min(v for v in versions if v) if any(versions) else None
            ledger.set_status(conn, batch_id, ledger.LOADED, rows_loaded=total, schema_version=version)
        conn.commit()
    except (QuarantineError, _StageFailed) as err:
        if isinstance(err, _StageFailed):  # already recorded by stage()
            raise err.__cause__ from None
        if conn is None:
            raise
        record_failure(conninfo, conn, [batch_id], err, feed.id)
        raise
    except Exception as err:
        record_failure(conninfo, conn, [batch_id], err, feed.id)
        if isinstance(err, QUARANTINE_ERRORS):
            raise QuarantineError(f"batch {fetched['batch_key']} for {ods_code} quarantined: {err}") from err
        raise
    finally:
        if conn is not None:
            conn.close()
    cleanup(feed, fetched, conninfo)
    secs = time.monotonic() - t0
    log.info("moved %d staged rows of %s into raw for %s in %.1fs", total, fetched["batch_key"], ods_code, secs)
    return {"batch_id": batch_id, "ods_code": ods_code, "rows": total, "seconds": round(secs, 3), "late": late,
            "status": ledger.LOADED}


def cleanup(feed: Feed, fetched: dict, conninfo: str, *, force: bool = False) -> bool:
    """Drop the delivery's staging tables once no organisation still needs them (or when ``force``).

    Returns True if tables were dropped. Rebuilt from the archive if a practice needs them later.
    """
    ids = {k: int(v) for k, v in fetched["batch_ids"].items()}
    delivery = ids[ledger.SHARED]
    with psycopg.connect(conninfo) as conn:
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"im1.stage:{delivery}",))
        pending = [o for o, b in ids.items() if o != ledger.SHARED and not ledger.get_batch(conn, b).final]
        if pending and not force:
            return False
        names = [r[0] for r in conn.execute(
            "select tablename from pg_tables where schemaname = %s and tablename like %s",
            (STAGE_SCHEMAS[feed.supplier], f"d{delivery}\\_\\_%"))]
        for name in names:
            conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(STAGE_SCHEMAS[feed.supplier], name)))
        conn.commit()
    if names:
        log.info("dropped %d staging table(s) of delivery %s", len(names), fetched["batch_key"])
    return bool(names)
