"""The incremental EMIS staging against full rebuilds and the synthetic supplier's own snapshots.

Real PostgreSQL, real encrypted deliveries from the synthetic supplier on a real SFTP server,
ingested by the real pipeline functions (discover -> fetch -> load, then the GX quality checks
that mark a batch passed, as the DAG's tasks call them), dbt run through the project's helpers.

* daily deltas (per-table snapshot differences, records changed twice in a day under increasing
  ProcessingIds, rows out of ProcessingId order, sparse delete rows) applied one day at a time
  leave every incremental base model equal to a ``--full-refresh`` rebuild of it, and every
  staging view equal to the supplier's snapshot of the last day;
* a late (older) batch loaded after a newer one does not override the newer rows, and a record
  deleted by the newer batch stays deleted;
* a batch that passes its quality checks after a later batch was applied is applied on the next run;
* a re-run with nothing new changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from im1 import specs
from im1.crypto import Keyring
from im1.ingest import quality
from im1dev import dbtgen
from im1dev.synth import emis as synth_emis
from im1dev.synth import supplier
from im1dev.synth.world import World, build_world
from tests.ingest.conftest import START, guid, run_core

# a few days of deliveries, each ingested and transformed: minutes on a busy two-core machine
pytestmark = pytest.mark.timeout(1500)
log = logging.getLogger(__name__)
INCREMENTAL = [specs.emis_table(t) for t in dbtgen.EMIS_INCREMENTAL]
OBS = specs.emis_table("CareRecord_Observation")


# -- helpers -------------------------------------------------------------------------------------
def ingest(site, feed, *, check: bool = True) -> list[int]:
    """discover -> fetch -> load every ready batch; then the quality checks (unless ``check`` is false)."""
    t0 = time.monotonic()
    results = run_core(site, feed)
    bad = [r for r in results if isinstance(r, Exception)]
    assert not bad, bad
    ids = [r.batch_id for r in results if not r.skipped]
    if check:
        passed(site, ids)
    log.info("ingest of %d batch(es): %.1fs", len(ids), time.monotonic() - t0)
    return ids


def passed(site, ids: list[int]) -> None:
    assert all(r.success for r in quality.check_batches(ids, site.loader_url))


# the EMIS staging layer and the ledger views it reads (the SystmOne models are another test's)
STAGING = ("staging.emis", "staging.ingest")


def build(tdb, *args: str, command: str = "run") -> None:
    """``dbt run`` (or ``build``: with the data and unit tests) of the EMIS staging layer."""
    t0 = time.monotonic()
    tdb.dbt(command, "--select", *STAGING, *args)
    log.info("dbt %s --select %s %s: %.1fs", command, " ".join(STAGING), " ".join(args), time.monotonic() - t0)


def base(t: specs.EmisTable) -> str:
    return f"staging.{dbtgen.emis_model_name(t, base=True)}"


def base_columns(conn, t: specs.EmisTable) -> list[str]:
    return [r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_schema = 'staging' and table_name = %s "
        "order by ordinal_position", (dbtgen.emis_model_name(t, base=True),))]


def fingerprint(conn) -> dict[str, tuple]:
    """Rows, and a digest of every row (applied_at included), of each incremental base model, plus
    the batches applied to each."""
    out = {}
    for t in INCREMENTAL:
        keys = ", ".join(dbtgen.snake(k) for k in t.keys)
        out[t.name] = conn.execute(
            f"select count(*), md5(string_agg(b::text, '|' order by {keys})) from {base(t)} as b").fetchone()  # noqa: S608
    out["applied"] = tuple(conn.execute(
        "select model, batch_id, loaded_at, applied_at from staging.im1_applied_batches order by 1, 2"))
    return out


def assert_equals_full_refresh(tdb) -> None:
    """Every incremental base model equals a --full-refresh rebuild of it (EXCEPT both ways; every
    column but applied_at, which records when a row became current)."""
    with tdb.connect() as conn:
        conn.execute("create schema if not exists incr_copy")
        for t in INCREMENTAL:
            name = dbtgen.emis_model_name(t, base=True)
            conn.execute(f"drop table if exists incr_copy.{name}")
            conn.execute(f"create table incr_copy.{name} as select * from staging.{name}")  # noqa: S608
    build(tdb, "--full-refresh")
    with tdb.connect() as conn:
        for t in INCREMENTAL:
            name = dbtgen.emis_model_name(t, base=True)
            cols = ", ".join(c for c in base_columns(conn, t) if c != "applied_at")
            n = conn.execute(f"select count(*) from staging.{name}").fetchone()[0]  # noqa: S608
            assert n > 0, name
            for a, b in (("incr_copy", "staging"), ("staging", "incr_copy")):
                diff = conn.execute(f"select {cols} from {a}.{name} except all select {cols} from {b}.{name}"  # noqa: S608
                                    ).fetchall()
                assert diff == [], f"{name}: {len(diff)} row(s) in {a} but not in {b}, e.g. {diff[:2]}"


def staged_rows(conn, t: specs.EmisTable) -> list[tuple]:
    cols = [c for c in synth_emis.COLS[t.name].names if c != "Deleted"]
    sel = ", ".join(f"{dbtgen.snake(c)}::text" for c in cols)
    return conn.execute(f"select {sel} from staging.{dbtgen.emis_model_name(t)}").fetchall()  # noqa: S608


def expected_rows(t: specs.EmisTable, rows: list[tuple]) -> list[tuple]:
    """Snapshot rows as staging types them, as text ('' is NULL)."""
    names = synth_emis.COLS[t.name].names
    keep = [i for i, n in enumerate(names) if n != "Deleted"]
    return [tuple(r[i] or None for i in keep) for r in rows]


def assert_matches_snapshot(conn, world: World, data_date: dt.date) -> None:
    """Each staging view holds the supplier's snapshot of ``data_date``: for a table with deletes,
    exactly its records (every column, typed); a table without a Deleted column cannot lose a
    record through a delta, so there the snapshot's records must be present and current."""
    snap = synth_emis.snapshot(world, data_date)
    for t in specs.emis_tables().values():
        want = expected_rows(t, snap[t.name])
        got = staged_rows(conn, t)
        if t.has_deleted:
            assert sorted(got) == sorted(set(want)), f"{t.name}: staging differs from the snapshot"
        else:
            missing = set(want) - set(got)
            assert not missing, f"{t.name}: {len(missing)} snapshot row(s) not current in staging, e.g. {list(missing)[:2]}"
        assert len(got) == len(set(got)), t.name


# -- daily deltas ---------------------------------------------------------------------------------
DAYS = 4


def test_daily_deltas_equal_a_full_refresh_and_the_snapshot(tsite, tdb):
    ods = "Z92401"
    # seed 51: its deltas hold deleted observations and a record changed the same day (checked below)
    world = build_world(seed=51, patients_per_practice=60, ods_codes=[ods], org_guids={ods: guid(92401)},
                        agreement_guid=tsite.agreement, start=START, days=DAYS, years=2, volume=0.5)
    feed = tsite.feed("emis_incr_daily", [ods])
    delivered: dict[str, int] = {}
    for day in range(DAYS):
        with Keyring() as kr:
            kr.import_key(tsite.keys.public_armored)
            pub = supplier.publish_emis_day(world, day, tsite.feed_dir, keyring=kr, recipient=tsite.keys.fingerprint)
        for table, n in pub.rows.items():
            delivered[table] = delivered.get(table, 0) + n
        assert len(ingest(tsite, feed)) == 1
        build(tdb)
        with tdb.connect() as conn:
            assert_matches_snapshot(conn, world, world.start + dt.timedelta(days=day))
            applied = sorted(conn.execute("select model, count(*) from staging.im1_applied_batches group by 1"))
            assert applied == [(base(t).split(".")[1], day + 1) for t in sorted(INCREMENTAL, key=lambda t: t.raw_name)]
    # the deltas exercised what they should: changes, deletes, a record twice in one file
    with tdb.connect() as conn:
        deletes = conn.execute(f"select count(*) from {base(OBS)} where is_deleted").fetchone()[0]  # noqa: S608
        twice = conn.execute("select count(*) from (select observationguid from raw_emis.carerecord_observation "
                             "group by _batch_id, observationguid having count(*) > 1) x").fetchone()[0]
        out_of_order = conn.execute(
            "select count(*) from (select processingid::int - lag(processingid::int) over (partition by _batch_id "
            "order by _row_number) as step from raw_emis.carerecord_observation) x where step < 0").fetchone()[0]
    assert delivered["CareRecord_Observation"] > 0 and deletes > 0 and twice > 0 and out_of_order > 0

    # a re-run with nothing new changes nothing (rows, applied_at, applied batches); with the
    # data tests and the unit tests this time
    with tdb.connect() as conn:
        before = fingerprint(conn)
    build(tdb, command="build")
    with tdb.connect() as conn:
        assert fingerprint(conn) == before

    assert_equals_full_refresh(tdb)
    with tdb.connect() as conn:
        assert_matches_snapshot(conn, world, world.end)


# -- late batches and late quality ----------------------------------------------------------------
def _value(conn, obs_guid: str) -> tuple | None:
    """(value, is_deleted, applied_at) of an observation in the base model; None if absent."""
    return conn.execute(f"select value::text, is_deleted, applied_at from {base(OBS)} "  # noqa: S608
                        "where observation_guid = %s", (obs_guid,)).fetchone()


def _staged(conn, obs_guid: str) -> bool:
    return conn.execute("select count(*) from staging.stg_emis__carerecord_observation where observation_guid = %s",
                        (obs_guid,)).fetchone()[0] == 1


def test_late_batches_and_batches_passing_quality_late(tsite, tdb):
    ods = "Z92402"
    world = build_world(seed=25, patients_per_practice=30, ods_codes=[ods], org_guids={ods: guid(92402)},
                        agreement_guid=tsite.agreement, start=START, days=1, years=1, volume=0.3)
    feed = tsite.feed("emis_incr_late", [ods])

    def publish(n: int, tables: dict[str, list], *, bulk: bool = False) -> None:
        """Batch ``n``: extract timestamp n days after the bulk's (the order they were made in)."""
        ts = World.extract_ts(world.start) + dt.timedelta(days=n)
        with Keyring() as kr:
            kr.import_key(tsite.keys.public_armored)
            synth_emis.write_batch(world, tables, tsite.feed_dir, extract_ts=ts, batch_number=n + 1,
                                   export_type="bulk" if bulk else "delta", keyring=kr,
                                   recipient=tsite.keys.fingerprint)

    publish(0, synth_emis.snapshot(world, world.start), bulk=True)
    ingest(tsite, feed)
    build(tdb)
    rows = synth_emis.as_dicts(OBS.name, synth_emis.snapshot(world, world.start)[OBS.name])
    rows = [r for r in rows if not r["ParentObservationGuid"]]
    assert len(rows) > 20
    a, b, c, e, f, g, p, new = (dict(r) for r in rows[:8])
    new["ObservationGuid"] = guid(0x7E57)

    def v(r: dict, value: str) -> dict:
        return {**r, "Value": value, "NumericUnit": "mmol/mol"}

    def deleted(r: dict) -> tuple:
        return synth_emis.delete_row(OBS.name, synth_emis.COLS[OBS.name].row(**r))

    # batch 2 arrives (and is applied) before batch 1: A changed, B deleted, P changed twice in
    # one file (ProcessingId order decides, whatever the file order)
    publish(2, {OBS.name: [v(a, "102"), deleted(b), v(p, "401"), v(p, "402")]})
    ingest(tsite, feed)
    build(tdb)
    with tdb.connect() as conn:
        assert _value(conn, a["ObservationGuid"])[:2] == ("102", False)
        assert _value(conn, b["ObservationGuid"])[1] is True and not _staged(conn, b["ObservationGuid"])
        assert _value(conn, p["ObservationGuid"])[:2] == ("402", False)
        applied_a = _value(conn, a["ObservationGuid"])[2]

    # batch 1, older, arrives late: it must not override A, nor bring B back; C and a new record apply
    publish(1, {OBS.name: [v(a, "101"), v(b, "201"), v(c, "301"), v(new, "7")]})
    ingest(tsite, feed)
    with tdb.connect() as conn:
        assert conn.execute("select is_late from ingest.batches where feed_id = %s and batch_key like %s",
                            (feed.id, "%@" + (World.extract_ts(world.start) + dt.timedelta(days=1))
                             .strftime("%Y%m%d%H%M%S"))).fetchone() == (True,)
    build(tdb)
    with tdb.connect() as conn:
        assert _value(conn, a["ObservationGuid"]) == ("102", False, applied_a)  # kept, with its applied_at
        assert _value(conn, b["ObservationGuid"])[1] is True and not _staged(conn, b["ObservationGuid"])
        assert _value(conn, c["ObservationGuid"])[:2] == ("301", False) and _staged(conn, c["ObservationGuid"])
        assert _value(conn, new["ObservationGuid"])[:2] == ("7", False)
        assert _value(conn, c["ObservationGuid"])[2] > applied_a  # applied by this run

    # batches 3 and 4 load; 4 passes its checks first and is applied; 3 passes later
    publish(3, {OBS.name: [v(e, "501"), v(f, "601"), v(g, "701")]})
    publish(4, {OBS.name: [v(e, "502"), deleted(g)]})
    b3, b4 = ingest(tsite, feed, check=False)
    passed(tsite, [b4])
    build(tdb)
    f_before = None
    with tdb.connect() as conn:
        assert _value(conn, e["ObservationGuid"])[:2] == ("502", False)
        f_before = _value(conn, f["ObservationGuid"])
        assert f_before[0] != "601"
        assert _value(conn, g["ObservationGuid"])[1] is True
        applied = {r[0] for r in conn.execute("select batch_id from staging.im1_applied_batches")}
        assert b4 in applied and b3 not in applied
    passed(tsite, [b3])
    build(tdb)
    with tdb.connect() as conn:
        assert _value(conn, e["ObservationGuid"])[:2] == ("502", False)
        assert _value(conn, f["ObservationGuid"])[:2] == ("601", False)
        assert _value(conn, f["ObservationGuid"])[2] > f_before[2]
        assert _value(conn, g["ObservationGuid"])[1] is True and not _staged(conn, g["ObservationGuid"])
        assert b3 in {r[0] for r in conn.execute("select batch_id from staging.im1_applied_batches")}
        before = fingerprint(conn)
    build(tdb, command="build")
    with tdb.connect() as conn:
        assert fingerprint(conn) == before
    assert_equals_full_refresh(tdb)
