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
RELEASED = "released"
LOADING = "loading"
# a batch in a final state is not touched again by a run (a quarantined one waits for a release)
FINAL = {LOADED, QUARANTINED}
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
    delivery_batch_id: int | None = None,
    status: str | None = None,
    error: str | None = None,
) -> BatchRow:
    """Insert the batch if new; return its current ledger row either way.

    ``status``/``error`` only apply to a new row (e.g. an incomplete batch quarantined at its deadline).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            insert into ingest.batches (feed_id, supplier, batch_key, organisation, extract_ts, file_count,
                                        delivery_batch_id, status, error)
            values (%s, %s, %s, %s, %s, %s, %s, coalesce(%s, 'discovered'), %s)
            on conflict (feed_id, batch_key, organisation) do update
               set updated_at = now(),
                   file_count = coalesce(excluded.file_count, ingest.batches.file_count),
                   delivery_batch_id = coalesce(excluded.delivery_batch_id, ingest.batches.delivery_batch_id)
            returning *
            """,
            (feed_id, supplier, batch_key, organisation, extract_ts, file_count, delivery_batch_id, status, error),
        )
        return _row(cur.fetchone())


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


def quarantine(conn: psycopg.Connection, batch_id: int, reason: str, *, feed_id: str | None = None) -> None:
    """Mark a batch quarantined with its reason (kept in ``ingest.batches.error`` and as an event)."""
    set_status(conn, batch_id, QUARANTINED, error=reason)
    log_event(conn, f"quarantined: {reason}", feed_id=feed_id, batch_id=batch_id, level="error")


class ReleaseError(ValueError):
    """The batch cannot be released (unknown, or not quarantined/failed)."""


def release(conn: psycopg.Connection, batch_id: int, note: str | None = None) -> list[BatchRow]:
    """Re-queue a quarantined (or failed) batch so the next run loads it; returns the rows released.

    A multi-organisation delivery is released as a whole: its shared row and every organisation's
    row that is quarantined or failed go back in the queue together (they come from the same files).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from ingest.batches where batch_id = %s for update", (batch_id,))
        r = cur.fetchone()
        if r is None:
            raise ReleaseError(f"no batch {batch_id} in the ledger")
        row = _row(r)
        if row.status not in (QUARANTINED, FAILED):
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
                (delivery, delivery, QUARANTINED, FAILED),
            )
            rows = [_row(x) for x in cur.fetchall()]
        else:
            rows = [row]
    text = note or "released by an operator"
    for b in rows:
        conn.execute(
            """update ingest.batches set status = %s, released_at = now(), release_note = %s,
                      quality_status = null, updated_at = now() where batch_id = %s""",
            (RELEASED, text, b.batch_id),
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
    is_delta: bool | None = None,
) -> int:
    """Record a fetched file of a batch (again: its latest copy). ``is_delta`` is TPP's manifest
    flag (False = a full file); None where the delivery does not say."""
    row = conn.execute(
        """
        insert into ingest.files (batch_id, file_name, table_name, remote_path, archive_path, bytes, sha256,
                                  fetched_at, status, is_delta)
        values (%s, %s, %s, %s, %s, %s, %s, now(), 'fetched', %s)
        on conflict (batch_id, file_name) do update
           set archive_path = excluded.archive_path, bytes = excluded.bytes, sha256 = excluded.sha256,
               remote_path = excluded.remote_path, is_delta = excluded.is_delta
        returning file_id
        """,
        (batch_id, file_name, table_name, remote_path, archive_path, size, sha256, is_delta),
    ).fetchone()
    return int(row[0])


def file_checksum(conn: psycopg.Connection, batch_id: int, file_name: str) -> tuple[str, int] | None:
    """The checksum and size recorded for one file of one batch (TPP file names repeat in every
    batch, so an archived copy is matched within its batch)."""
    row = conn.execute("select sha256, bytes from ingest.files where batch_id = %s and file_name = %s",
                       (batch_id, file_name)).fetchone()
    return (row[0], int(row[1])) if row and row[0] else None


def archived_checksum(conn: psycopg.Connection, feed_id: str, file_name: str, size: int | None) -> str | None:
    """The checksum of an already-archived copy of this file (same feed, name and size - any size
    when ``size`` is None), if any."""
    row = conn.execute(
        """
        select f.sha256 from ingest.files f join ingest.batches b using (batch_id)
         where b.feed_id = %s and f.file_name = %s and (%s::bigint is null or f.bytes = %s)
           and f.archive_path is not null
         order by f.file_id desc limit 1
        """,
        (feed_id, file_name, size, size),
    ).fetchone()
    return row[0] if row else None


def record_file_rows(conn: psycopg.Connection, file_id: int, *, rows_in_file: int, rows_loaded: int,
                     status: str, schema_version: str | None = None, unknown_columns: list[str] | None = None,
                     seconds: float | None = None) -> None:
    conn.execute(
        """update ingest.files set rows_in_file = %s, rows_loaded = %s, status = %s,
                  schema_version = coalesce(%s, schema_version),
                  unknown_columns = coalesce(%s, unknown_columns),
                  loaded_at = case when %s = 'loaded' then now() else loaded_at end,
                  load_seconds = coalesce(%s, load_seconds)
            where file_id = %s""",
        (rows_in_file, rows_loaded, status, schema_version, unknown_columns, status, seconds, file_id),
    )


def latest_version(conn: psycopg.Connection, feed_id: str) -> str | None:
    """The schema version of the feed's most recent loaded batch (what the next batch is expected to be)."""
    row = conn.execute(
        """select schema_version from ingest.batches where feed_id = %s and status = 'loaded'
             and schema_version is not null order by extract_ts desc, batch_id desc limit 1""",
        (feed_id,),
    ).fetchone()
    return row[0] if row else None


def latest_loaded_ts(conn: psycopg.Connection, feed_id: str, organisation: str) -> dt.datetime | None:
    row = conn.execute(
        "select max(extract_ts) from ingest.batches where feed_id = %s and organisation = %s and status = 'loaded'",
        (feed_id, organisation),
    ).fetchone()
    return row[0] if row else None
