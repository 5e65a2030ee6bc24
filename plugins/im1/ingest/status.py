"""What the ledger says about each feed and organisation: batches, status, rows, errors, freshness.

Backs ``im1 ingest status``, ``im1 ingest release`` and the operator view in the Airflow UI
(:func:`overview`; plain functions, no Airflow).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from im1.ingest import ledger


@dataclass(frozen=True)
class Freshness:
    feed_id: str
    organisation: str
    last_extract: dt.datetime | None  # extract timestamp of the newest loaded batch
    last_loaded_at: dt.datetime | None
    age_hours: float | None  # now - last_extract (None if nothing loaded yet)
    batches: int
    loaded: int
    quarantined: int
    pending: int


def batches(conn: psycopg.Connection, *, feed_id: str | None = None, limit: int = 20,
            problems_only: bool = False) -> list[dict]:
    """The most recent batches per feed and organisation (newest first), with their files' rows."""
    where, args = [], []
    if feed_id:
        where.append("b.feed_id = %s")
        args.append(feed_id)
    if problems_only:
        where.append("b.status not in ('loaded')")
    clause = ("where " + " and ".join(where)) if where else ""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            select * from (
                select b.*, row_number() over (partition by b.feed_id, b.organisation
                                               order by b.extract_ts desc, b.batch_id desc) as recency,
                       (select count(*) from ingest.events e where e.batch_id = b.batch_id
                         and e.level = 'warning') as warnings,
                       (select coalesce(sum(u.rows), 0) from ingest.unclaimed_rows u
                         where u.batch_id = b.batch_id) as unclaimed_rows
                  from ingest.batches b {clause}
            ) x where recency <= %s
            order by feed_id, organisation, extract_ts desc, batch_id desc
            """,  # noqa: S608 - `clause` is built from fixed fragments above
            (*args, limit),
        )
        return cur.fetchall()


def freshness(conn: psycopg.Connection, *, feed_id: str | None = None) -> list[Freshness]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            select feed_id, organisation,
                   max(extract_ts) filter (where status = 'loaded') as last_extract,
                   max(loaded_at) filter (where status = 'loaded') as last_loaded_at,
                   extract(epoch from (localtimestamp - max(extract_ts) filter (where status = 'loaded'))) / 3600
                       as age_hours,
                   count(*) as batches,
                   count(*) filter (where status = 'loaded') as loaded,
                   count(*) filter (where status = 'quarantined') as quarantined,
                   count(*) filter (where status not in ('loaded', 'quarantined')) as pending
              from ingest.batches where (%s::text is null or feed_id = %s)
             group by feed_id, organisation order by feed_id, organisation
            """,
            (feed_id, feed_id),
        )
        return [Freshness(**{**r, "age_hours": float(r["age_hours"]) if r["age_hours"] is not None else None})
                for r in cur.fetchall()]


STALE_HOURS = 48.0  # a daily feed whose newest loaded extract is older than this is flagged


def overview(conn: psycopg.Connection, *, expected: list[tuple[str, str]] = (), feed_id: str | None = None,
             stale_hours: float = STALE_HOURS) -> list[dict]:
    """One row per feed and organisation: its latest batch and its freshness (the operator view).

    ``expected``: (feed id, organisation) pairs from the feed config, listed even before their
    first delivery. Each row: ``feed_id``, ``organisation``, ``batch_id``, ``batch_key``,
    ``extract_ts``, ``status``, ``is_late``, ``rows_loaded``, ``error``, ``quality_status``,
    ``warnings``, ``unclaimed_rows``, ``updated_at`` (of the latest batch, ``None`` if there is none),
    then ``last_extract``, ``last_loaded_at``, ``age_hours`` (hours since the newest loaded extract),
    the ``loaded``/``quarantined``/``pending`` batch counts, and ``attention``: ``""`` when all is
    well, else why an operator should look (``quarantined``, ``failed``, ``stale``, ``never loaded``...).
    """
    latest = {(b["feed_id"], b["organisation"]): b for b in batches(conn, feed_id=feed_id, limit=1)}
    fresh = {(f.feed_id, f.organisation): f for f in freshness(conn, feed_id=feed_id)}
    keys = list(dict.fromkeys([*[k for k in expected if feed_id in (None, k[0])], *sorted(fresh)]))
    rows = []
    for key in keys:
        b, f = latest.get(key), fresh.get(key)
        row = {"feed_id": key[0], "organisation": key[1]}
        for col in ("batch_id", "batch_key", "extract_ts", "status", "is_late", "rows_loaded", "error",
                    "quality_status", "warnings", "unclaimed_rows", "updated_at"):
            row[col] = b.get(col) if b else None
        for col in ("warnings", "unclaimed_rows"):  # count(*) and sum() come back as int/Decimal
            row[col] = int(row[col]) if row[col] is not None else None
        row["release_note"] = b.get("release_note") if b else None
        row.update({"last_extract": f.last_extract if f else None, "last_loaded_at": f.last_loaded_at if f else None,
                    "age_hours": f.age_hours if f else None, "loaded": f.loaded if f else 0,
                    "quarantined": f.quarantined if f else 0, "pending": f.pending if f else 0})
        reasons = []
        if b is None:
            reasons.append("no delivery yet")
        elif b["status"] in ("quarantined", "failed"):
            reasons.append(b["status"])
        if b is not None and row["last_extract"] is None:
            reasons.append("never loaded")
        elif row["age_hours"] is not None and row["age_hours"] > stale_hours:
            reasons.append(f"stale (> {stale_hours:g} h)")
        if b is not None and b["is_late"]:
            reasons.append("late batch")
        if b is not None and b.get("unclaimed_rows"):
            reasons.append("unclaimed rows")
        row["attention"] = ", ".join(reasons)
        rows.append(row)
    return rows


def _short(text: str | None, width: int) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_status(conn: psycopg.Connection, *, feed_id: str | None = None, limit: int = 5,
                  problems_only: bool = False, error_width: int = 90) -> str:
    """A plain-text report: freshness per feed and organisation, then its latest batches."""
    fresh = freshness(conn, feed_id=feed_id)
    if not fresh:
        return "no batches in the ledger yet" + (f" for feed {feed_id}" if feed_id else "")
    lines = ["feed / organisation            last extract loaded   age     loaded quarantined pending"]
    for f in fresh:
        last = f"{f.last_extract:%Y-%m-%d %H:%M}" if f.last_extract else "never"
        age = f"{f.age_hours:.0f} h" if f.age_hours is not None else "-"
        lines.append(f"{f.feed_id + ' / ' + f.organisation:<30} {last:<22} {age:<7} {f.loaded:>6} "
                     f"{f.quarantined:>11} {f.pending:>7}")
    lines.append("")
    lines.append(f"{'batch':>6}  {'feed / org':<24} {'batch key':<30} {'status':<11} {'rows':>9} {'late':<4} "
                 f"{'quality':<7} error / note")
    for b in batches(conn, feed_id=feed_id, limit=limit, problems_only=problems_only):
        note = b["error"] or (f"released: {b['release_note']}" if b["release_note"] else "")
        if b["unclaimed_rows"]:
            note = (note + "; " if note else "") + f"{b['unclaimed_rows']} unclaimed row(s) (ingest.unclaimed_rows)"
        if b["warnings"] and not note:
            note = f"{b['warnings']} warning(s) in ingest.events"
        rows = "" if b["rows_loaded"] is None else str(b["rows_loaded"])
        lines.append(f"{b['batch_id']:>6}  {b['feed_id'] + ' / ' + b['organisation']:<24} {b['batch_key']:<30} "
                     f"{b['status']:<11} {rows:>9} {'yes' if b['is_late'] else '':<4} "
                     f"{b['quality_status'] or '':<7} {_short(note, error_width)}")
    return "\n".join(lines)


def release(conn: psycopg.Connection, batch_id: int, note: str | None = None) -> str:
    """Release a quarantined batch (and the rest of its multi-organisation delivery); a message."""
    rows = ledger.release(conn, batch_id, note)
    conn.commit()
    listed = ", ".join(f"{r.batch_id} ({r.organisation}, was {r.status})" for r in rows)
    first = rows[0]
    return (f"released {first.feed_id} {first.batch_key}: batch(es) {listed}. The next run of "
            f"im1_ingest__{first.feed_id} loads it again (fetching the files anew), in extract-timestamp order.")
