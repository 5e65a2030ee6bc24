"""The ingest ledger (schema ``ingest``): every batch and file, its checksum, rows and status.

Batches are keyed on (feed, batch key, organisation). A batch that reached ``loaded`` is never
loaded again, which makes re-runs and re-deliveries idempotent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

LOADED = "loaded"
QUARANTINED = "quarantined"
FAILED = "failed"
FINAL = {LOADED}


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
    )


def register_batch(
    conn: psycopg.Connection,
    *,
    feed_id: str,
    supplier: str,
    batch_key: str,
    organisation: str,
    extract_ts: dt.datetime,
    file_count: int,
) -> BatchRow:
    """Insert the batch if new; return its current ledger row either way."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            insert into ingest.batches (feed_id, supplier, batch_key, organisation, extract_ts, file_count)
            values (%s, %s, %s, %s, %s, %s)
            on conflict (feed_id, batch_key, organisation) do update set updated_at = now()
            returning *
            """,
            (feed_id, supplier, batch_key, organisation, extract_ts, file_count),
        )
        return _row(cur.fetchone())


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


def set_status(
    conn: psycopg.Connection,
    batch_id: int,
    status: str,
    *,
    error: str | None = None,
    rows_loaded: int | None = None,
    schema_version: str | None = None,
    is_late: bool | None = None,
) -> None:
    stamp = {
        "fetched": ", fetched_at = coalesce(fetched_at, now())",
        "loading": ", load_started_at = now()",
        LOADED: ", loaded_at = now()",
    }.get(status, "")
    conn.execute(
        f"""
        update ingest.batches set status = %s, error = %s,
               rows_loaded = coalesce(%s, rows_loaded), schema_version = coalesce(%s, schema_version),
               is_late = coalesce(%s, is_late), updated_at = now() {stamp}
         where batch_id = %s
        """,  # noqa: S608 - `stamp` is one of three fixed fragments above
        (status, error, rows_loaded, schema_version, is_late, batch_id),
    )


def log_event(conn: psycopg.Connection, message: str, *, feed_id: str | None = None, batch_id: int | None = None,
              level: str = "info") -> None:
    conn.execute(
        "insert into ingest.events (feed_id, batch_id, level, message) values (%s, %s, %s, %s)",
        (feed_id, batch_id, level, message),
    )


def upsert_file(
    conn: psycopg.Connection,
    *,
    batch_id: int,
    file_name: str,
    table_name: str,
    remote_path: str | None,
    archive_path: str | None,
    size: int,
    sha256: str,
) -> int:
    row = conn.execute(
        """
        insert into ingest.files (batch_id, file_name, table_name, remote_path, archive_path, bytes, sha256,
                                  fetched_at, status)
        values (%s, %s, %s, %s, %s, %s, %s, now(), 'fetched')
        on conflict (batch_id, file_name) do update
           set archive_path = excluded.archive_path, bytes = excluded.bytes, sha256 = excluded.sha256,
               remote_path = excluded.remote_path
        returning file_id
        """,
        (batch_id, file_name, table_name, remote_path, archive_path, size, sha256),
    ).fetchone()
    return int(row[0])


def archived_checksum(conn: psycopg.Connection, feed_id: str, file_name: str, size: int) -> str | None:
    """The checksum of an already-archived copy of this file (same feed, name and size), if any."""
    row = conn.execute(
        """
        select f.sha256 from ingest.files f join ingest.batches b using (batch_id)
         where b.feed_id = %s and f.file_name = %s and f.bytes = %s and f.archive_path is not null
         order by f.file_id desc limit 1
        """,
        (feed_id, file_name, size),
    ).fetchone()
    return row[0] if row else None


def latest_loaded_ts(conn: psycopg.Connection, feed_id: str, organisation: str) -> dt.datetime | None:
    row = conn.execute(
        "select max(extract_ts) from ingest.batches where feed_id = %s and organisation = %s and status = 'loaded'",
        (feed_id, organisation),
    ).fetchone()
    return row[0] if row else None
