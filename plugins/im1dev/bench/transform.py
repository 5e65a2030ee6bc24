"""``make bench-transform``: a full rebuild of the dbt project against a daily incremental run.

One synthetic 35,000-patient EMIS practice (20 years of history at EMIS production volumes: about
19 million observations) is generated once, encrypted like EMIS's files, and cached under
``<state dir>/bench/`` with one daily delta (per-table snapshot differences), so reruns skip the
generation. On the project's PostgreSQL (the embedded server, or ``IM1_WAREHOUSE_URL``), in a
fresh database ``im1_bench_transform``:

1. the bulk goes through the platform's ingest (``discover`` -> ``fetch`` -> ``load`` -> quality
   checks, the same functions the DAG's tasks call; the "SFTP site" is the cache folder, read
   with a local client, so the transport is not what is timed);
2. ``dbt build --full-refresh --exclude-resource-type unit_test`` of the whole project (seeds,
   models and every data test; the unit tests check the SQL, not the data) is timed;
3. the delta day goes through the same ingest;
4. ``dbt build --exclude-resource-type unit_test`` (the same selection, incremental) is timed.

Both timings, the wall time per layer (staging models and their tests vs the rest), the rows per
day in the big tables and the rows in their incremental base models are printed; the last line
is ``delta/full: <ratio>`` (target: at most 0.1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from im1 import paths, specs
from im1dev.bench.ingest import PASSPHRASE, bench_dir, keypair, say

PATIENTS = 35_000
YEARS = 20.0
VOLUME = 1.0
SEED = 35
ODS = "Z99951"
ORG_GUID = "{B3E0C0DE-0035-4000-8000-000000035000}"
AGREEMENT = "B3E0C0DE-0035-4000-8000-00000000BE35"
START = dt.date(2026, 11, 1)
DAYS = 2  # the bulk (day 0) and one daily delta (day 1)
BENCH_DB = "im1_bench_transform"
# --keep-bulk / --reuse-bulk: the database as it is after the bulk's ingest, kept as a template
BULK_TEMPLATE = "im1_bench_transform_bulk"
FEED_ID = "bench_transform"
# Both runs: the whole project (seeds, models, data tests), as a production run builds it; the dbt
# unit tests check the SQL, not the data, so they run in CI (make test), not in a warehouse's daily run.
BUILD_ARGS = ("--exclude-resource-type", "unit_test")
BIG_TABLES = ("CareRecord_Observation", "CareRecord_Consultation", "Appointment_Slot", "Prescribing_IssueRecord")


# -- inputs (cached) ---------------------------------------------------------------------------
def cache_dir(patients: int) -> Path:
    return bench_dir() / f"transform_{patients}p_{YEARS:g}y_s{SEED}"


def world(patients: int):
    from im1dev.synth.world import build_world

    return build_world(seed=SEED, patients_per_practice=patients, ods_codes=[ODS], org_guids={ODS: ORG_GUID},
                       agreement_guid=AGREEMENT, start=START, days=DAYS, years=YEARS, volume=VOLUME)


def site_root(patients: int) -> Path:
    """The cached deliveries, laid out as on the supplier's SFTP site (``IM1/sftp/<agreement>/<date>/``)."""
    return cache_dir(patients) / "sftp"


def deliveries(patients: int, key: dict, workers: int) -> dict[int, dict[str, int]]:
    """Generate (once) the encrypted bulk and the delta day; returns rows per table per day."""
    from im1.crypto import Keyring
    from im1dev.synth import supplier

    root = cache_dir(patients)
    root.mkdir(parents=True, exist_ok=True)
    feed_dir = site_root(patients) / "IM1" / "sftp" / AGREEMENT
    w = None
    out: dict[int, dict[str, int]] = {}
    for day in range(DAYS):
        done = root / f"day{day}.json"
        if done.exists():
            out[day] = json.loads(done.read_text())["rows"]
            continue
        w = w or world(patients)
        folder = feed_dir / supplier.World.extract_ts(START + dt.timedelta(days=day)).strftime("%Y%m%d")
        shutil.rmtree(folder, ignore_errors=True)  # the leftovers of an interrupted generation
        say(f"generating day {day} ({'bulk' if day == 0 else 'delta'}) of a {patients:,}-patient practice "
            f"({YEARS:g} years, volume {VOLUME}) with {workers} worker(s); cached in {root} ...")
        with Keyring() as kr:
            kr.import_key(key["public"])
            if day == 0:
                pub = supplier.write_emis_bulk(w, feed_dir, keyring=kr, recipient=key["fingerprint"],
                                               workers=workers)
            else:
                pub = supplier.publish_emis_day(w, day, feed_dir, keyring=kr, recipient=key["fingerprint"],
                                                workers=workers)
        say(f"  day {day}: {sum(pub.rows.values()):,} rows in {len(pub.files)} files, {pub.seconds:.0f}s")
        done.write_text(json.dumps({"rows": pub.rows, "seconds": pub.seconds}))
        out[day] = pub.rows
    return out


class LocalSite:
    """The cached deliveries as the ingest's SFTP client sees a site: ``walk`` and ``download``.

    Downloads are hard links (or copies across file systems) into the archive: the transport is
    benchmarked elsewhere, this measures the transform.
    """

    def __init__(self, root: Path):
        self.root = root

    def walk(self, remote_root: str) -> Iterator:
        from im1.transport.sftp import RemoteFile

        base = self.root / remote_root.lstrip("/")
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.endswith((".uploading", ".part")):
                st = p.stat()
                yield RemoteFile("/" + str(p.relative_to(self.root)), st.st_size, int(st.st_mtime))

    def download(self, remote, dest: Path) -> Path:
        src = self.root / remote.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
        return dest


# -- the warehouse ------------------------------------------------------------------------------
def fresh_warehouse(wh, template: str | None = None):
    """A new bench database: bootstrapped empty, or a copy of ``template`` (an ingested bulk)."""
    import psycopg
    from psycopg import sql

    from im1.warehouse import Warehouse
    from im1.warehouse.bootstrap import bootstrap

    with psycopg.connect(wh.url_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(BENCH_DB)))
        if template:
            conn.execute(sql.SQL("create database {} template {}").format(sql.Identifier(BENCH_DB),
                                                                          sql.Identifier(template)))
    bwh = Warehouse(admin_url=wh.url_for(BENCH_DB), embedded=wh.embedded)
    if not template:
        bootstrap(bwh)
    return bwh


def bulk_template(wh, patients: int) -> dict | None:
    """The kept bulk (its ingest figures), if a template database for these inputs exists."""
    import psycopg

    marker = cache_dir(patients) / "bulk_template.json"
    if not marker.exists():
        return None
    with psycopg.connect(wh.url_for("postgres")) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (BULK_TEMPLATE,)).fetchone():
            return None
    return json.loads(marker.read_text())


def keep_bulk(wh, bwh, patients: int, bulk: dict) -> None:
    """Copy the database after the bulk's ingest into a template for ``--reuse-bulk``."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(wh.url_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(BULK_TEMPLATE)))
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (BENCH_DB,))
        conn.execute(sql.SQL("create database {} template {}").format(sql.Identifier(BULK_TEMPLATE),
                                                                      sql.Identifier(BENCH_DB)))
    (cache_dir(patients) / "bulk_template.json").write_text(json.dumps(bulk))


def feed_config():
    from im1.config import parse_config

    return parse_config({"version": 1, "feeds": [{
        "id": FEED_ID, "supplier": "emis", "extract": "organisation",
        "transport": {"kind": "sftp", "host": "127.0.0.1", "path": f"/IM1/sftp/{AGREEMENT}", "conn_id": "bench"},
        "pgp_conn_id": "bench", "sharing_agreement_guid": AGREEMENT,
        "organisations": [{"ods_code": ODS, "supplier_org_id": ORG_GUID}]}]}).feeds[0]


def ingest(bwh, site: LocalSite, key: dict, *, until: dt.datetime | None) -> dict:
    """discover -> fetch -> load -> quality for every ready batch before ``until`` (as the DAG does)."""
    from im1.ingest.credentials import PgpKey
    from im1.ingest.pipeline import Pipeline
    from im1.warehouse import LOADER

    pipe = Pipeline(feed_config(), bwh.role_url(LOADER), key=PgpKey(key["secret"], PASSPHRASE))
    t0 = time.monotonic()
    found = pipe.discover(site, until=until)
    assert found.ready and not found.incomplete, found
    rows = 0
    ids = []
    t_load = t_quality = 0.0
    for b in found.ready:
        fetched = pipe.fetch(site, b)
        t1 = time.monotonic()
        r = pipe.load(ODS, fetched)
        t_load += time.monotonic() - t1
        rows += r.rows
        ids.append(r.batch_id)
        t1 = time.monotonic()
        q = pipe.quality(ODS, [fetched])
        t_quality += time.monotonic() - t1
        assert all(x.success for x in q), q
    return {"batches": [b.batch_key for b in found.ready], "batch_ids": ids, "rows": rows,
            "seconds": time.monotonic() - t0, "load_seconds": t_load, "quality_seconds": t_quality}


# -- dbt ----------------------------------------------------------------------------------------
def dbt_build(bwh, full_refresh: bool, out: Path) -> dict:
    from im1dev import runtime

    env = runtime.local_env(bwh)
    out.mkdir(parents=True, exist_ok=True)
    cmd = runtime.dbt_cmd("build", *(["--full-refresh"] if full_refresh else []), *BUILD_ARGS,
                          "--target-path", str(out / "target"), "--log-path", str(out / "logs"))
    t0 = time.monotonic()
    res = runtime.run(cmd, env, check=False, quiet=True)
    secs = time.monotonic() - t0
    (out / "dbt.log").write_text(res.stdout or "")
    if res.returncode != 0:
        raise RuntimeError(f"dbt build failed (exit {res.returncode}); see {out / 'dbt.log'}:\n"
                           f"{(res.stdout or '')[-3000:]}")
    return {"seconds": secs, **layers(out / "target")}


def _layer(node: dict) -> str:
    parts = Path(node.get("original_file_path", "")).parts
    if node.get("resource_type") == "seed":
        return "seeds"
    return parts[1] if len(parts) > 2 and parts[0] == "models" else "other"


def layers(target: Path) -> dict:
    """Node time per layer (staging / intermediate / marts / seeds), models and their tests apart,
    and the slowest nodes. With several threads the node times overlap, so they add up to more
    than the wall time."""
    manifest = json.loads((target / "manifest.json").read_text())
    results = json.loads((target / "run_results.json").read_text())
    nodes = manifest["nodes"]
    by: dict[str, float] = defaultdict(float)
    slow = []
    for r in results["results"]:
        uid = r["unique_id"]
        node = nodes.get(uid, {})
        t = float(r.get("execution_time") or 0.0)
        if uid.startswith(("test.", "unit_test.")):
            parent = next((d for d in node.get("depends_on", {}).get("nodes", []) if d.startswith("model.")), None)
            kind = "unit tests" if uid.startswith("unit_test.") else "tests"
            layer = _layer(nodes[parent]) if parent in nodes else "other"
            by[f"{layer} {kind}"] += t
        else:
            by[f"{_layer(node)} {'models' if uid.startswith('model.') else node.get('resource_type', '')}"] += t
        slow.append((t, uid.split(".", 2)[-1]))
    slow.sort(reverse=True)
    return {"layers": dict(sorted(by.items())), "slowest": slow[:12], "nodes": len(results["results"])}


def counts(bwh) -> dict:
    import psycopg

    out = {}
    with psycopg.connect(bwh.admin_url) as conn:
        for t in BIG_TABLES:
            raw = specs.raw_table_name(t)
            out[t] = conn.execute(f"select count(*) from staging.base_emis__{raw}").fetchone()[0]  # noqa: S608
    return out


def raw_rows(bwh, batch_ids: list[int]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(bwh.admin_url) as conn:
        return dict(conn.execute("select table_name, sum(rows_loaded)::bigint from ingest.files "
                                 "where batch_id = any(%s) group by table_name", (batch_ids,)).fetchall())


def report_build(label: str, b: dict) -> None:
    say(f"{label}: {b['seconds']:.1f}s wall ({b['nodes']} nodes); node time by layer (threads overlap):")
    for k, v in b["layers"].items():
        say(f"    {k:<28} {v:8.1f}s")
    say("  slowest: " + ", ".join(f"{n} {t:.1f}s" for t, n in b["slowest"][:8]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m im1dev.bench.transform", description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=PATIENTS)
    ap.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="processes generating the deliveries (first run only)")
    ap.add_argument("--generate-only", action="store_true", help="only generate (and cache) the deliveries")
    ap.add_argument("--keep-bulk", action="store_true",
                    help=f"after the bulk's ingest, keep a copy of the database ({BULK_TEMPLATE}) for --reuse-bulk")
    ap.add_argument("--reuse-bulk", action="store_true",
                    help="start from the kept copy instead of ingesting the bulk again (developing the dbt models)")
    a = ap.parse_args(argv)

    from im1dev.runtime import warehouse_up
    from im1dev.synth.world import World

    key = keypair()
    rows = deliveries(a.patients, key, a.workers)
    if a.generate_only:
        return 0
    site = LocalSite(site_root(a.patients))
    work = cache_dir(a.patients) / "run"
    shutil.rmtree(work, ignore_errors=True)
    os.environ.setdefault("IM1_STATE_DIR", str(paths.state_dir()))
    with warehouse_up() as wh:
        kept = bulk_template(wh, a.patients) if a.reuse_bulk else None
        bwh = fresh_warehouse(wh, BULK_TEMPLATE if kept else None)
        say(f"PostgreSQL {bwh.host}:{bwh.port}/{bwh.database}; {os.cpu_count()} CPU(s); "
            f"dbt threads {os.environ.get('IM1_DBT_THREADS', '4')}")
        day1 = World.extract_ts(START + dt.timedelta(days=1))
        if kept:
            bulk = kept
            say(f"ingest day 0 (bulk): not repeated, the database starts as a copy of {BULK_TEMPLATE}; "
                "the figures of that ingest:")
        else:
            bulk = ingest(bwh, site, key, until=day1)
            if a.keep_bulk:
                keep_bulk(wh, bwh, a.patients, bulk)
        say(f"ingest day 0 (bulk): {bulk['rows']:,} rows in {bulk['seconds']:.0f}s "
            f"(load {bulk['load_seconds']:.0f}s, quality checks {bulk['quality_seconds']:.0f}s)")
        full = dbt_build(bwh, True, work / "full")
        n_full = counts(bwh)
        report_build("dbt build --full-refresh (whole project)", full)
        delta = ingest(bwh, site, key, until=None)
        say(f"ingest day 1 (delta): {delta['rows']:,} rows in {delta['seconds']:.0f}s "
            f"(load {delta['load_seconds']:.0f}s, quality checks {delta['quality_seconds']:.0f}s)")
        incr = dbt_build(bwh, False, work / "delta")
        n_incr = counts(bwh)
        report_build("dbt build (incremental, whole project)", incr)
        raw0, raw1 = raw_rows(bwh, bulk["batch_ids"]), raw_rows(bwh, delta["batch_ids"])
    say("rows per day (delivered / in raw) and in the incremental base models (after full, after delta):")
    for t in BIG_TABLES:
        say(f"    {t:<26} day 0 {rows[0].get(t, 0):>12,} / {raw0.get(t, 0):>12,}   day 1 {rows[1].get(t, 0):>8,} / "
            f"{raw1.get(t, 0):>8,}   base {n_full[t]:>12,} -> {n_incr[t]:>12,}")
    others0 = sum(v for k, v in raw0.items() if k not in BIG_TABLES)
    others1 = sum(v for k, v in raw1.items() if k not in BIG_TABLES)
    say(f"    {'17 other tables':<26} day 0 {others0:>12,}                day 1 {others1:>8,}")
    say(f"full refresh {full['seconds']:.1f}s, incremental {incr['seconds']:.1f}s")
    say(f"delta/full: {incr['seconds'] / full['seconds']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
