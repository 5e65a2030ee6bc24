"""The incremental TPP staging against full rebuilds and the synthetic supplier's own snapshots.

A synthetic SystmOne practice's bulk and daily deltas (changed rows, RemovedData rows), and on one
day a re-bulk of SRCode (a full file), are written into raw_tpp as the loader leaves them (ledger
batch and file rows included, the manifest's IsDelta per file); dbt runs the staging layer after
each day. Every TPP staging view then holds exactly the records of the supplier's snapshot of that
day, each incremental base model equals a --full-refresh rebuild of it, and a re-run with nothing
new changes nothing. (The TPP ingest itself is tested in tests/ingest; the intermediate models
over these in tests/dbt and tests/dbt/test_activity_models.py.)
"""

from __future__ import annotations

import datetime as dt

import pytest

from im1 import specs
from im1dev import dbtgen
from im1dev.synth import tpp
from im1dev.synth.world import World, build_world

pytestmark = pytest.mark.timeout(900)
ODS = "Z92403"
FEED = "tpp_incr_daily"
DAYS = 4
REBULK_DAY = 2  # SRCode is sent in full that day
INCREMENTAL = dbtgen.TPP_INCREMENTAL
STRAY = 999_999_999_999  # an SRCode record day 1 brings that the supplier never had: the re-bulk drops it


def load(conn, world: World, day: int) -> int:
    """Day ``day``'s batch (the bulk on day 0) into raw_tpp and the ledger; returns its batch id."""
    data_date = world.start + dt.timedelta(days=day)
    tables = tpp.snapshot(world, data_date) if day == 0 else tpp.delta(world, data_date)
    if day == REBULK_DAY:
        tables["SRCode"] = tpp.snapshot(world, data_date)["SRCode"]
    if day == 1:  # plant a removal of a live record (the re-bulk sends it again) and a stray record
        live = tpp.snapshot(world, data_date)["SRCode"][0]
        stray = list(live)
        stray[tpp.COLS["SRCode"].index("RowIdentifier")] = str(STRAY)
        tables["SRCode"] = [*tables.get("SRCode", []), tpp.removed_row("SRCode", live), tuple(stray)]
    full = set(tables) if day == 0 else ({"SRCode"} if day == REBULK_DAY else set())
    bid = conn.execute(
        "insert into ingest.batches (feed_id, supplier, batch_key, organisation, extract_ts, status, quality_status, "
        "loaded_at) values (%s, 'tpp', %s, %s, %s, 'loaded', 'passed', now()) returning batch_id",
        (FEED, f"{tpp.cutoff(data_date):%Y%m%d}_0315", ODS, tpp.cutoff(data_date))).fetchone()[0]
    for name, rows in tables.items():
        conn.execute("insert into ingest.files (batch_id, file_name, table_name, status, is_delta) "
                     "values (%s, %s, %s, 'loaded', %s)", (bid, f"{name}.csv", name, name not in full))
        cols = [specs.raw_column_name(c) for c in tpp.COLS[name]]
        with conn.cursor().copy(f"copy raw_tpp.{specs.raw_table_name(name)} "
                                f"({', '.join(cols)}, _feed_id, _organisation, _batch_id, _file_id, _row_number, "
                                f"_load_seq) from stdin") as cp:
            for i, row in enumerate(rows, 1):
                cp.write_row([*row, FEED, ODS, bid, 0, i, i])
    return bid


def row_ids(world: World, data_date: dt.date, file: str) -> list[int]:
    rows = tpp.tables_as_of(world, data_date).get(file, {}).values()
    return [int(r[tpp.COLS[file].index("RowIdentifier")]) for r in rows]


def assert_matches_snapshot(conn, world: World, data_date: dt.date) -> None:
    """Each TPP staging view holds exactly the records of the supplier's snapshot (on day 1, with the
    planted removal and stray record)."""
    for file in dbtgen.tpp_staging():
        want = set(row_ids(world, data_date, file))
        if file == "SRCode" and data_date == world.start + dt.timedelta(days=1):
            want = (want - {row_ids(world, data_date, file)[0]}) | {STRAY}
        got = [r for (r,) in conn.execute(
            f"select row_identifier from staging.{dbtgen.tpp_model_name(file)} where practice_code = %s",  # noqa: S608
            (ODS,))]
        assert len(got) == len(set(got)), file
        assert set(got) == want, f"{file}: {len(set(got) - want)} extra, {len(want - set(got))} missing"


def base_rows(conn) -> dict[str, list]:
    out = {}
    for file in INCREMENTAL:
        name = dbtgen.tpp_model_name(file, base=True)
        cols = [c for (c,) in conn.execute(
            "select column_name from information_schema.columns where table_schema = 'staging' and table_name = %s "
            "and column_name <> 'applied_at' order by ordinal_position", (name,))]
        out[name] = sorted(conn.execute(
            f"select {', '.join(c + '::text' for c in cols)} from staging.{name}").fetchall(), key=repr)  # noqa: S608
    return out


# the SystmOne staging layer and the ledger views it reads (the EMIS models are another test's)
STAGING = ("staging.tpp", "staging.ingest")


def test_tpp_daily_deltas_equal_a_full_refresh_and_the_snapshot(tdb):
    world = build_world(seed=61, patients_per_practice=60, ods_codes=[ODS], start=dt.date(2026, 11, 1), days=DAYS,
                        years=2, supplier="tpp", community_share=0.2)
    for day in range(DAYS):
        with tdb.connect() as conn:
            load(conn, world, day)
        tdb.dbt("run", "--select", *STAGING)
        with tdb.connect() as conn:
            assert_matches_snapshot(conn, world, world.start + dt.timedelta(days=day))
            assert conn.execute("select count(distinct batch_id) from staging.im1_applied_batches "
                                "where model = 'base_tpp__srcode'").fetchone()[0] == day + 1
        if day == 1:  # the planted removal is a tombstone
            with tdb.connect() as conn:
                assert conn.execute("select count(*) from staging.base_tpp__srcode where is_deleted").fetchone()[0] > 0
    with tdb.connect() as conn:  # the stray record is a tombstone: the re-bulk superseded it
        assert conn.execute("select is_deleted from staging.base_tpp__srcode where row_identifier = %s",
                            (STRAY,)).fetchone() == (True,)

    # a re-run with nothing new changes nothing (applied_at included), with the data tests this time
    with tdb.connect() as conn:
        before = {n: sorted(conn.execute(f"select b::text from staging.{n} as b").fetchall())  # noqa: S608
                  for n in (dbtgen.tpp_model_name(f, base=True) for f in INCREMENTAL)}
    tdb.dbt("build", "--select", *STAGING, "--exclude", "resource_type:unit_test")
    with tdb.connect() as conn:
        assert before == {n: sorted(conn.execute(f"select b::text from staging.{n} as b").fetchall())  # noqa: S608
                          for n in before}
        incremental = base_rows(conn)
    tdb.dbt("run", "--select", *STAGING, "--full-refresh")
    with tdb.connect() as conn:
        assert base_rows(conn) == incremental
        assert_matches_snapshot(conn, world, world.end)
