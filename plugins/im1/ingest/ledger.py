"""The ingest ledger (schema ``ingest``): every batch and file, its checksum, rows and status.

The ledger owns the state machine: every status a batch or file can have is an enum member here,
every change of status is a named function here, and nothing else writes to ``ingest.*``
(``tests/test_repo.py`` checks). Batches are keyed on (feed, batch key, organisation)::

    discovered -> fetched -> loading -> loaded                         (quality: passed)
                     |          |         `-> quarantined (quality failed: rows removed)
                     |          |-> failed  (a fault that a retry may cure; the next run tries again)
                     `----------`-> quarantined (bad as delivered; waits for a release)
    quarantined | failed -> released -> fetched -> ...                 (an operator's release)

A batch that reached ``loaded`` is never loaded again, which makes re-runs and re-deliveries
idempotent; a quarantined one is not touched until it is released.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

import psycopg
from psycopg.rows import dict_row


class BatchStatus(StrEnum):
    DISCOVERED = "discovered"  # registered (e.g. incomplete at its deadline), nothing fetched yet
    FETCHED = "fetched"  # archived and recorded, not loaded
    LOADING = "loading"
    LOADED = "loaded"
    QUARANTINED = "quarantined"  # bad as delivered: waits for a release
    FAILED = "failed"  # a fault a retry may cure: the next run tries again
    RELEASED = "released"  # re-queued by an operator


class FileStatus(StrEnum):
    FETCHED = "fetched"
    STAGED = "staged"  # multi-organisation: in staging, not yet moved to raw
    LOADED = "loaded"
    NOT_LOADED = "not_loaded"  # archived and recorded only (no column list, manifest, ...)
    QUARANTINED = "quarantined"  # its batch failed a quality check: rows removed from raw


class QualityStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"


LOADED = BatchStatus.LOADED
QUARANTINED = BatchStatus.QUARANTINED
FAILED = BatchStatus.FAILED
RELEASED = BatchStatus.RELEASED
LOADING = BatchStatus.LOADING
# a batch in a final state is not touched again by a run (a quarantined one waits for a release)
FINAL = frozenset({BatchStatus.LOADED, BatchStatus.QUARANTINED})
# the organisation of a multi-organisation delivery's own row: shared tables, staging
SHARED = "*"


@dataclass(frozen=True)
class BatchRow:
    batch_id: int
    feed_id: str
    batch_key: str
    organisation: str
    extract_ts: dt.datetime
    status: str
    is_late: bool
    rows_loaded: int | None
    error: str | None
    delivery_batch_id: int | None = None
    quality_status: str | None = None
    supplier: str | None = None
    released_at: dt.datetime | None = None  # an operator released it (it is loaded as asked)

    @property
    def final(self) -> bool:
        return self.status in FINAL


def _row(r: dict) -> BatchRow:
    return BatchRow(
        batch_id=r["batch_id"],
        feed_id=r["feed_id"],
        batch_key=r["batch_key"],
        organisation=r["organisation"],
        extract_ts=r["extract_ts"],
        status=r["status"],
        is_late=r["is_late"],
        rows_loaded=r["rows_loaded"],
        error=r["error"],
        delivery_batch_id=r.get("delivery_batch_id"),
        quality_status=r.get("quality_status"),
        supplier=r.get("supplier"),
        released_at=r.get("released_at"),
    )


# -- batches: reading --------------------------------------------------------------------------------

def batches_for_key(conn: psycopg.Connection, feed_id: str, batch_key: str) -> dict[str, BatchRow]:
    """Every organisation's ledger row for one batch of a feed, by organisation."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from ingest.batches where feed_id = %s and batch_key = %s", (feed_id, batch_key))
        return {r["organisation"]: _row(r) for r in cur.fetchall()}


def get_batch(conn: psycopg.Connection, batch_id: int) -> BatchRow:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from ingest.batches where batch_id = %s", (batch_id,))
        r = cur.fetchone()
    if r is None:
        raise KeyError(f"no batch {batch_id} in the ledger")
    return _row(r)


def find_batch(conn: psycopg.Connection, feed_id: str, batch_key: str, organisation: str) -> BatchRow | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select * from ingest.batches where feed_id = %s and batch_key = %s and organisation = %s",
            (feed_id, batch_key, organisation),
        )
        r = cur.fetchone()
    return _row(r) if r else None


def loaded_batch_with_extract(conn: psycopg.Connection, feed_id: str, extract_ts: dt.datetime,
                              other_than: str) -> str | None:
    """The key of a loaded batch of the feed with this extract time, other than ``other_than``."""
    row = conn.execute(
        """select batch_key from ingest.batches where feed_id = %s and extract_ts = %s and batch_key <> %s
             and status = %s order by batch_id limit 1""",
        (feed_id, extract_ts, other_than, BatchStatus.LOADED)).fetchone()
    return row[0] if row else None


def previous_loaded_ts(conn: psycopg.Connection, feed_id: str, organisation: str,
                       before: dt.datetime) -> dt.datetime | None:
    """The latest extract time of the organisation's loaded batches older than ``before``."""
    return conn.execute(
        """select max(extract_ts) from ingest.batches
            where feed_id = %s and organisation = %s and status = %s and extract_ts < %s""",
        (feed_id, organisation, BatchStatus.LOADED, before)).fetchone()[0]


def latest_version(conn: psycopg.Connection, feed_id: str) -> str | None:
    """The schema version of the feed's most recent loaded batch (what the next batch is expected to be)."""
    row = conn.execute(
        """select schema_version from ingest.batches where feed_id = %s and status = %s
             and schema_version is not null order by extract_ts desc, batch_id desc limit 1""",
        (feed_id, BatchStatus.LOADED),
    ).fetchone()
    return row[0] if row else None


def latest_loaded_ts(conn: psycopg.Connection, feed_id: str, organisation: str) -> dt.datetime | None:
    row = conn.execute(
        "select max(extract_ts) from ingest.batches where feed_id = %s and organisation = %s and status = %s",
        (feed_id, organisation, BatchStatus.LOADED),
    ).fetchone()
    return row[0] if row else None


# -- batches: transitions ---------------------------------------------------------------------------

def register_batch(
    conn: psycopg.Connection,
    *,
    feed_id: str,
    supplier: str,
    batch_key: str,
    organisation: str,
    extract_ts: dt.datetime,
    file_count: int | None,
    delivery_batch_id: int | None = None,
) -> BatchRow:
    """-> discovered: insert the batch if new; return its current ledger row either way."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            insert into ingest.batches (feed_id, supplier, batch_key, organisation, extract_ts, file_count,
                                        delivery_batch_id, status)
            values (%s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (feed_id, batch_key, organisation) do update
               set updated_at = now(),
                   file_count = coalesce(excluded.file_count, ingest.batches.file_count),
                   delivery_batch_id = coalesce(excluded.delivery_batch_id, ingest.batches.delivery_batch_id)
            returning *
            """,
            (feed_id, supplier, batch_key, organisation, extract_ts, file_count, delivery_batch_id,
             BatchStatus.DISCOVERED),
        )
        return _row(cur.fetchone())


def correct_extract_ts(conn: psycopg.Connection, batch_id: int, extract_ts: dt.datetime) -> None:
    """A batch first registered with a guessed extract time (an incomplete TPP folder at its
    deadline) gets the time its manifest states."""
    conn.execute("update ingest.batches set extract_ts = %s, updated_at = now() where batch_id = %s",
                 (extract_ts, batch_id))


def _set_status(conn: psycopg.Connection, batch_id: int, status: BatchStatus, *, error: str | None = None,
                rows_loaded: int | None = None, schema_version: str | None = None, is_late: bool | None = None,
                stamp: str = "") -> None:
    conn.execute(
        f"""
        update ingest.batches set status = %s, error = %s,
               rows_loaded = coalesce(%s, rows_loaded), schema_version = coalesce(%s, schema_version),
               is_late = coalesce(%s, is_late), updated_at = now() {stamp}
         where batch_id = %s
        """,  # noqa: S608 - `stamp` is one of the fixed fragments of the transitions below
        (status, error, rows_loaded, schema_version, is_late, batch_id),
    )


def mark_fetched(conn: psycopg.Connection, batch_id: int) -> None:
    """-> fetched: every file of the batch is archived and recorded."""
    _set_status(conn, batch_id, BatchStatus.FETCHED, stamp=", fetched_at = coalesce(fetched_at, now())")


def start_loading(conn: psycopg.Connection, batch_id: int, *, is_late: bool) -> None:
    """-> loading: ``is_late`` when a newer extract of the organisation is already loaded."""
    _set_status(conn, batch_id, BatchStatus.LOADING, is_late=is_late, stamp=", load_started_at = now()")


def mark_loaded(conn: psycopg.Connection, batch_id: int, *, rows: int, schema_version: str | None = None) -> None:
    """-> loaded: its rows are in raw (committed in the same transaction)."""
    _set_status(conn, batch_id, BatchStatus.LOADED, rows_loaded=rows, schema_version=schema_version,
                stamp=", loaded_at = now()")


def mark_failed(conn: psycopg.Connection, batch_id: int, error: str, *, feed_id: str | None = None) -> None:
    """-> failed: a fault a retry may cure (connection lost, disk, ...); the next run tries again."""
    _set_status(conn, batch_id, BatchStatus.FAILED, error=error)
    log_event(conn, f"load failed (will be retried): {error}", feed_id=feed_id, batch_id=batch_id, level="error")


def quarantine(conn: psycopg.Connection, batch_id: int, reason: str, *, feed_id: str | None = None) -> None:
    """-> quarantined with its reason (kept in ``ingest.batches.error`` and as an event)."""
    _set_status(conn, batch_id, BatchStatus.QUARANTINED, error=reason)
    log_event(conn, f"quarantined: {reason}", feed_id=feed_id, batch_id=batch_id, level="error")


def quality_passed(conn: psycopg.Connection, batch_id: int) -> None:
    conn.execute("update ingest.batches set quality_status = %s, quality_checked_at = now() where batch_id = %s",
                 (QualityStatus.PASSED, batch_id))


def quality_failed(conn: psycopg.Connection, row: BatchRow, reason: str) -> None:
    """Quality failed: the batch's files and the batch are quarantined (its raw rows are removed by
    the caller in the same transaction)."""
    conn.execute("update ingest.files set status = %s where batch_id = %s and status = %s",
                 (FileStatus.QUARANTINED, row.batch_id, FileStatus.LOADED))
    conn.execute("update ingest.batches set quality_status = %s, quality_checked_at = now() where batch_id = %s",
                 (QualityStatus.FAILED, row.batch_id))
    quarantine(conn, row.batch_id, reason, feed_id=row.feed_id)


def record_quality_checks(conn: psycopg.Connection, records: list[tuple]) -> None:
    """One row per expectation evaluated: (batch_id, file_id, table, expectation, column, success,
    observed_value json, run_id)."""
    with conn.cursor() as cur:
        cur.executemany(
            """insert into ingest.quality_checks (batch_id, file_id, table_name, expectation, column_name,
                                                  success, observed_value, run_id)
               values (%s, %s, %s, %s, %s, %s, %s, %s)""",
            records,
        )


class ReleaseError(ValueError):
    """The batch cannot be released (unknown, or not quarantined/failed)."""


def release(conn: psycopg.Connection, batch_id: int, note: str | None = None) -> list[BatchRow]:
    """quarantined | failed -> released: re-queue the batch so the next run loads it; returns the rows.

    A multi-organisation delivery is released as a whole: its shared row and every organisation's
    row that is quarantined or failed go back in the queue together (they come from the same files).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from ingest.batches where batch_id = %s for update", (batch_id,))
        r = cur.fetchone()
        if r is None:
            raise ReleaseError(f"no batch {batch_id} in the ledger")
        row = _row(r)
        if row.status not in (BatchStatus.QUARANTINED, BatchStatus.FAILED):
            raise ReleaseError(
                f"batch {batch_id} ({row.feed_id} {row.batch_key} {row.organisation}) is {row.status}, not "
                "quarantined or failed: nothing to release"
            )
        delivery = row.delivery_batch_id or (row.batch_id if row.organisation == SHARED else None)
        if delivery is not None:
            cur.execute(
                """select * from ingest.batches
                    where (batch_id = %s or delivery_batch_id = %s) and status in (%s, %s)
                    order by batch_id for update""",
                (delivery, delivery, BatchStatus.QUARANTINED, BatchStatus.FAILED),
            )
            rows = [_row(x) for x in cur.fetchall()]
        else:
            rows = [row]
    text = note or "released by an operator"
    for b in rows:
        conn.execute(
            """update ingest.batches set status = %s, released_at = now(), release_note = %s,
                      quality_status = null, updated_at = now() where batch_id = %s""",
            (BatchStatus.RELEASED, text, b.batch_id),
        )
        log_event(conn, f"released ({text}); was {b.status}: {b.error}", feed_id=b.feed_id, batch_id=b.batch_id,
                  level="warning")
    return rows


def log_event(conn: psycopg.Connection, message: str, *, feed_id: str | None = None, batch_id: int | None = None,
              level: str = "info") -> None:
    conn.execute(
        "insert into ingest.events (feed_id, batch_id, level, message) values (%s, %s, %s, %s)",
        (feed_id, batch_id, level, message),
    )


# -- files ----------------------------------------------------------------------------------------------

def record_fetched_file(
    conn: psycopg.Connection,
    *,
    batch_id: int,
    file_name: str,
    table_name: str,
    remote_path: str | None,
    archive_path: str | None,
    size: int,
    sha256: str,
    is_delta: bool | None = None,
    not_loaded: str | None = None,
) -> int:
    """-> fetched (or not_loaded, with the reason): a file of a batch is archived; again: its
    latest copy. ``is_delta`` is TPP's manifest flag (False = a full file)."""
    row = conn.execute(
        """
        insert into ingest.files (batch_id, file_name, table_name, remote_path, archive_path, bytes, sha256,
                                  fetched_at, status, is_delta, error)
        values (%s, %s, %s, %s, %s, %s, %s, now(), %s, %s, %s)
        on conflict (batch_id, file_name) do update
           set archive_path = excluded.archive_path, bytes = excluded.bytes, sha256 = excluded.sha256,
               remote_path = excluded.remote_path, is_delta = excluded.is_delta,
               status = case when excluded.status = %s then excluded.status else ingest.files.status end,
               error = coalesce(excluded.error, ingest.files.error)
        returning file_id
        """,
        (batch_id, file_name, table_name, remote_path, archive_path, size, sha256,
         FileStatus.NOT_LOADED if not_loaded else FileStatus.FETCHED, is_delta, not_loaded, FileStatus.NOT_LOADED),
    ).fetchone()
    return int(row[0])


def file_ids(conn: psycopg.Connection, batch_id: int) -> dict[str, int]:
    """File name -> file id of a batch's recorded files."""
    return dict(conn.execute("select file_name, file_id from ingest.files where batch_id = %s", (batch_id,)).fetchall())


def file_checksum(conn: psycopg.Connection, batch_id: int, file_name: str) -> tuple[str, int] | None:
    """The checksum and size recorded for one file of one batch."""
    row = conn.execute("select sha256, bytes from ingest.files where batch_id = %s and file_name = %s",
                       (batch_id, file_name)).fetchone()
    return (row[0], int(row[1])) if row and row[0] else None


def record_file_rows(conn: psycopg.Connection, file_id: int, *, rows_in_file: int, rows_loaded: int,
                     status: FileStatus, schema_version: str | None = None, unknown_columns: list[str] | None = None,
                     seconds: float | None = None, plain_sha256: str | None = None) -> None:
    """-> staged | loaded: the file's rows are in staging (multi-organisation) or in raw, with the
    hash of the plaintext that was loaded."""
    conn.execute(
        """update ingest.files set rows_in_file = %s, rows_loaded = %s, status = %s,
                  schema_version = coalesce(%s, schema_version),
                  unknown_columns = coalesce(%s, unknown_columns),
                  loaded_at = case when %s = %s then now() else loaded_at end,
                  load_seconds = coalesce(%s, load_seconds),
                  plain_sha256 = coalesce(%s, plain_sha256)
            where file_id = %s""",
        (rows_in_file, rows_loaded, status, schema_version, unknown_columns, status, FileStatus.LOADED, seconds,
         plain_sha256, file_id),
    )


def same_content_as(conn: psycopg.Connection, batch_id: int, *, ignore_tables: list[str]) -> str | None:
    """The key of an already loaded batch of the same feed and organisation whose content this batch
    repeats (a re-send under another name), or None.

    The rule, at batch level: take each batch's *evidence*, the (table, plaintext sha256) of its
    files that held at least one data row, leaving out ``ignore_tables`` (reference data such as
    lookups, which suppliers send again unchanged day after day). This batch repeats an earlier one
    when its evidence is not empty and is exactly the earlier batch's evidence. So an empty delta
    file (no rows: no evidence) or an identical lookup table (ignored) never makes a batch a
    duplicate, nor does one identical table among changed ones (the sets differ); a quiet day that
    carries nothing but such files has no evidence and always loads. Only files hashed when loaded
    count (``plain_sha256`` is set by the load). A full file (SystmOne ``IsDelta`` false) is not
    evidence either: it replaces the table's earlier rows for the organisation, so loading the same
    full file again changes nothing, and a quiet practice's full extract repeats itself by right
    (and a table that goes back to earlier content, A then B then A, must load).
    """
    row = conn.execute(
        """
        with mine as (
            select table_name, plain_sha256 from ingest.files
             where batch_id = %(b)s and rows_in_file > 0 and plain_sha256 is not null
               and is_delta is not false and table_name <> all(%(ignore)s)),
        me as (select feed_id, organisation from ingest.batches where batch_id = %(b)s),
        candidates as (
            select distinct e.batch_id from ingest.files f join mine using (table_name, plain_sha256)
              join ingest.batches e on e.batch_id = f.batch_id join me using (feed_id, organisation)
             where e.batch_id <> %(b)s and e.status = %(loaded)s),
        evidence as (
            select f.batch_id, f.table_name, f.plain_sha256 from ingest.files f join candidates using (batch_id)
             where f.rows_in_file > 0 and f.plain_sha256 is not null and f.is_delta is not false
               and f.table_name <> all(%(ignore)s))
        select e.batch_key from ingest.batches e join candidates c using (batch_id)
         where not exists (select table_name, plain_sha256 from mine
                           except select table_name, plain_sha256 from evidence v where v.batch_id = c.batch_id)
           and not exists (select table_name, plain_sha256 from evidence v where v.batch_id = c.batch_id
                           except select table_name, plain_sha256 from mine)
         order by e.extract_ts, e.batch_id limit 1
        """,
        {"b": batch_id, "ignore": list(ignore_tables), "loaded": BatchStatus.LOADED}).fetchone()
    return row[0] if row else None


def staged_file(conn: psycopg.Connection, batch_id: int, table: str) -> tuple[str | None, list[str] | None]:
    """The schema version and unknown columns recorded when a delivery's file was staged."""
    row = conn.execute("select schema_version, unknown_columns from ingest.files where batch_id = %s and "
                       "table_name = %s", (batch_id, table)).fetchone()
    return (row[0], row[1]) if row else (None, None)


def loaded_files(conn: psycopg.Connection, batch_id: int, default_version: str) -> list[dict]:
    """The batch's loaded files: id, table, rows in the file and in raw, schema version."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """select file_id, table_name, rows_in_file, rows_loaded, coalesce(schema_version, %s) as version
                 from ingest.files where batch_id = %s and status = %s order by table_name""",
            (default_version, batch_id, FileStatus.LOADED),
        )
        return cur.fetchall()


def record_unclaimed(conn: psycopg.Connection, delivery_batch_id: int, rows: list[tuple]) -> None:
    """The rows of a multi-organisation delivery no configured organisation takes: (table,
    OrganisationGuid, rows, in the agreement, activated). Replaces what an earlier staging recorded."""
    conn.execute("delete from ingest.unclaimed_rows where batch_id = %s", (delivery_batch_id,))
    for table, guid, n, in_agreement, activated in rows:
        conn.execute(
            """insert into ingest.unclaimed_rows (batch_id, table_name, organisation_guid, rows, in_agreement,
                                                   is_activated) values (%s, %s, %s, %s, %s, %s)""",
            (delivery_batch_id, table, guid, n, in_agreement, activated),
        )
