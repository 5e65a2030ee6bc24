"""``make bench-ingest``: how close the platform's load gets to the raw ``gpg | psql \\copy`` pipeline.

On the project's PostgreSQL (the embedded server, or ``IM1_WAREHOUSE_URL``), in a separate
database ``im1_bench``:

(a) ``gpg --decrypt file | psql -c "\\copy bench.carerecord_observation (cols) from stdin with
    (format csv, header true)"`` into a plain table with the same text columns;
(b) the platform's ingest of the same file (``im1.ingest.pipeline.Pipeline.load``: decrypt overlapped
    with COPY, header validation against the spec, metadata columns, ledger), in a subprocess whose
    peak memory (max RSS) is read, at 2 million and at 4 million rows;
(c) for information, the multi-organisation path on the same file (COPY once into UNLOGGED
    staging, then one ``INSERT ... SELECT`` per practice).

The encrypted CareRecord_Observation files (zlib-compressed PGP, like EMIS's) and the key are
generated once and cached under ``<state dir>/bench/``; reruns skip the generation. The last line
printed is ``ratio: <b/a>`` (throughput of b over a, at 2 million rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from im1 import emis, paths, specs

ROWS = 2_000_000
ROWS_BIG = 4_000_000
AGREEMENT = "B3E0C0DE-0000-4000-8000-00000000BE1C"
ORGS = {  # ODS code -> OrganisationGuid (synthetic)
    "Z99901": "{B3E0C0DE-0001-4000-8000-000000000001}",
    "Z99902": "{B3E0C0DE-0002-4000-8000-000000000002}",
    "Z99903": "{B3E0C0DE-0003-4000-8000-000000000003}",
    "Z99904": "{B3E0C0DE-0004-4000-8000-000000000004}",
}
EXTRACT_TS = dt.datetime(2026, 11, 2, 2, 0, 0)
PASSPHRASE = "bench-only-passphrase"  # a key generated for the benchmark, kept in the git-ignored state dir
BENCH_DB = "im1_bench"


def bench_dir() -> Path:
    return paths.private_dir(paths.state_dir() / "bench")


def say(msg: str) -> None:
    print(msg, flush=True)


# -- inputs (cached) ---------------------------------------------------------------------------
def keypair() -> dict:
    from im1.crypto import Keyring

    cached = bench_dir() / "key.json"
    if cached.exists():
        return json.loads(cached.read_text())
    with Keyring() as kr:
        kp = kr.generate("IM1 benchmark consumer", "bench@example.invalid", PASSPHRASE)
    data = {"fingerprint": kp.fingerprint, "public": kp.public_armored, "secret": kp.secret_armored}
    cached.write_text(json.dumps(data))
    cached.chmod(0o600)
    return data


def batch_files(rows: int, key: dict) -> dict:
    """A complete batch: the big Observation file plus header-only files for the other 20 tables."""
    from im1.crypto import Keyring
    from im1dev.bench import observations
    from im1dev.synth.emis import write_csv

    folder = bench_dir() / f"batch_{rows}"
    folder.mkdir(exist_ok=True)
    files = []
    with Keyring() as kr:
        kr.import_key(key["public"])
        for table in sorted(specs.emis_tables()):
            name = emis.format_name(table, EXTRACT_TS, AGREEMENT, batch_number=rows // 1000)
            out = folder / name
            files.append({"table": table, "name": name, "archive_path": str(out)})
            if out.exists():
                continue
            with tempfile.TemporaryDirectory(prefix="im1-bench-", dir=bench_dir()) as tmp:
                plain = Path(tmp) / name[:-4]
                if table == observations.TABLE:
                    t0 = time.monotonic()
                    observations.write(plain, rows, org_guids=list(ORGS.values()))
                    say(f"generated {rows:,} observation rows ({plain.stat().st_size / 1e6:.0f} MB) in "
                        f"{time.monotonic() - t0:.1f}s; encrypting (zlib-compressed, as EMIS sends them)...")
                else:
                    write_csv(plain, specs.emis_table(table).column_names(), [])
                part = out.with_name(out.name + ".part")
                kr.encrypt_file(plain, part, key["fingerprint"])
                part.replace(out)
    obs = next(f for f in files if f["table"] == observations.TABLE)
    say(f"input: {Path(obs['archive_path']).name} ({Path(obs['archive_path']).stat().st_size / 1e6:.0f} MB "
        f"encrypted, {rows:,} rows), cached in {folder}")
    return {"files": files, "observation": obs}


# -- the warehouse ------------------------------------------------------------------------------
def bench_warehouse(wh):
    from im1.warehouse import Warehouse
    from im1.warehouse.bootstrap import bootstrap

    bwh = Warehouse(admin_url=wh.url_for(BENCH_DB), embedded=wh.embedded)
    bootstrap(bwh)
    return bwh


def feed_config(extract: str = "organisation"):
    from im1.config import parse_config

    orgs = list(ORGS.items())[: 1 if extract == "organisation" else len(ORGS)]
    return parse_config({"version": 1, "feeds": [{
        "id": f"bench_{extract}", "supplier": "emis", "extract": extract,
        "transport": {"kind": "sftp", "host": "127.0.0.1", "path": f"/IM1/sftp/{AGREEMENT}", "conn_id": "bench"},
        "pgp_conn_id": "bench", "sharing_agreement_guid": AGREEMENT,
        "organisations": [{"ods_code": o, "supplier_org_id": g} for o, g in orgs]}]}).feeds[0]


def register(conninfo: str, feed, batch: dict, rows: int) -> dict:
    """The batch fetched by the platform's own fetch step from the cached files (hard links, so the
    transport is not what is measured here); returns the fetched batch as the load step gets it."""
    import psycopg

    from im1.ingest.model import PlannedBatch, PlannedFile
    from im1.ingest.pipeline import Pipeline
    from im1dev.bench.transform import LocalSite

    key = f"bench_{rows}@{EXTRACT_TS:%Y%m%d%H%M%S}"
    folder = Path(batch["files"][0]["archive_path"]).parent
    planned = PlannedBatch(key, EXTRACT_TS.isoformat(), expected_version=specs.LATEST_EMIS_VERSION, is_bulk=True,
                           files=[PlannedFile(f["table"], f["name"], "/" + f["name"],
                                              Path(f["archive_path"]).stat().st_size) for f in batch["files"]])
    with psycopg.connect(conninfo) as conn:
        conn.execute("delete from ingest.batches where feed_id = %s", (feed.id,))
        conn.commit()
    return Pipeline(feed, conninfo, archive=bench_dir() / "archive" / feed.id).fetch(LocalSite(folder), planned).to_dict()


# -- (a) ----------------------------------------------------------------------------------------
def run_raw_pipeline(bwh, key: dict, obs_file: Path, rows: int) -> float:
    import psycopg
    from psycopg import sql

    from im1.crypto import Keyring
    from im1.warehouse import LOADER
    from im1dev.embedded import postgres_bin_dir

    cols = specs.emis_table("CareRecord_Observation").column_names()
    raw_cols = [specs.raw_column_name(c) for c in cols]
    with psycopg.connect(bwh.admin_url, autocommit=True) as conn:
        conn.execute("create schema if not exists bench")
        conn.execute(sql.SQL("alter schema bench owner to {}").format(sql.Identifier(LOADER)))
        conn.execute("drop table if exists bench.carerecord_observation")
        conn.execute(sql.SQL("create table bench.carerecord_observation ({})").format(
            sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in raw_cols)))
        conn.execute(sql.SQL("alter table bench.carerecord_observation owner to {}").format(sql.Identifier(LOADER)))
        conn.execute("checkpoint")
    psql = str(postgres_bin_dir() / "psql")
    copy = (f"\\copy bench.carerecord_observation ({', '.join(raw_cols)}) from stdin "
            "with (format csv, header true)")
    with Keyring() as kr, tempfile.TemporaryDirectory(prefix="im1-bench-", dir=bench_dir()) as tmp:
        kr.import_key(key["secret"], PASSPHRASE)
        pw = Path(tmp) / "pw"
        pw.write_text(PASSPHRASE)
        pw.chmod(0o600)
        gpg = ["gpg", "--homedir", str(kr.home), "--batch", "--quiet", "--pinentry-mode", "loopback",
               "--passphrase-file", str(pw), "--decrypt", str(obs_file)]
        t0 = time.monotonic()
        p1 = subprocess.Popen(gpg, stdout=subprocess.PIPE)
        p2 = subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", bwh.role_url(LOADER), "-c", copy],
                              stdin=p1.stdout, stdout=subprocess.PIPE)
        p1.stdout.close()
        out, _ = p2.communicate()
        rc1 = p1.wait()
        secs = time.monotonic() - t0
    if rc1 != 0 or p2.returncode != 0:
        raise RuntimeError(f"gpg | psql failed (gpg {rc1}, psql {p2.returncode}): {out!r}")
    with psycopg.connect(bwh.admin_url) as conn:
        n = conn.execute("select count(*) from bench.carerecord_observation").fetchone()[0]
        conn.execute("drop table bench.carerecord_observation")
        conn.commit()
    assert n == rows, f"(a) loaded {n} rows, expected {rows}"
    return secs


# -- (b) and (c): in a child process, so its peak memory is its own ------------------------------
def child(args: dict) -> None:
    import psycopg

    from im1.ingest.credentials import PgpKey
    from im1.ingest.model import FetchedBatch
    from im1.ingest.pipeline import Pipeline

    feed = feed_config(args["extract"])
    pipe = Pipeline(feed, args["conninfo"], key=PgpKey(args["secret"], PASSPHRASE))
    fetched = FetchedBatch.from_dict(args["fetched"])
    out: dict = {}
    t0 = time.monotonic()
    if args["extract"] == "organisation":
        out["rows"] = pipe.load(feed.organisations[0].ods_code, fetched).rows
    else:
        s = pipe.stage(fetched)
        out["stage_seconds"] = time.monotonic() - t0
        t1 = time.monotonic()
        out["rows"] = sum(pipe.load(o.ods_code, fetched).rows for o in feed.organisations)
        out["move_seconds"] = time.monotonic() - t1
        out["staged"] = s["staged_rows"]
    out["seconds"] = time.monotonic() - t0
    with psycopg.connect(args["conninfo"]) as conn:
        out["ledger_rows"] = conn.execute(
            "select coalesce(sum(rows_loaded), 0)::bigint from ingest.batches where feed_id = %s and organisation <> '*'",
            (feed.id,)).fetchone()[0]
    # this process only: gpg streams in its own process (RUSAGE_CHILDREN would count the forked
    # copy of this process before gpg's exec, not gpg itself)
    out["maxrss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT" + json.dumps(out), flush=True)


def run_platform(bwh, key: dict, batch: dict, rows: int, extract: str = "organisation") -> dict:
    import psycopg

    from im1.warehouse import LOADER

    feed = feed_config(extract)
    conninfo = bwh.role_url(LOADER)
    with psycopg.connect(bwh.admin_url, autocommit=True) as conn:
        conn.execute("truncate raw_emis.carerecord_observation")
        conn.execute("checkpoint")
    fetched = register(conninfo, feed, batch, rows)
    args = {"extract": extract, "secret": key["secret"], "fetched": fetched, "conninfo": conninfo}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "im1dev.bench.ingest", "--child", json.dumps(args)],
                         capture_output=True, text=True, env=dict(os.environ))
    wall = time.monotonic() - t0
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT")), None)
    if res.returncode != 0 or line is None:
        raise RuntimeError(f"platform ingest failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    out = json.loads(line[len("RESULT"):])
    out["process_seconds"] = wall
    assert out["rows"] == rows and out["ledger_rows"] == rows, out
    with psycopg.connect(bwh.admin_url, autocommit=True) as conn:
        got = conn.execute("select count(*) from raw_emis.carerecord_observation where _feed_id = %s",
                           (feed.id,)).fetchone()[0]
        assert got == rows, f"raw has {got} rows, expected {rows}"
        conn.execute("truncate raw_emis.carerecord_observation")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m im1dev.bench.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--rows-big", type=int, default=ROWS_BIG, help="second size, for peak memory (b)")
    ap.add_argument("--no-multi", action="store_true", help="skip (c), the multi-organisation path")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(json.loads(a.child))
        return 0
    from im1dev.runtime import warehouse_up

    key = keypair()
    small = batch_files(a.rows, key)
    big = batch_files(a.rows_big, key)
    with warehouse_up() as wh:
        bwh = bench_warehouse(wh)
        say(f"PostgreSQL {bwh.host}:{bwh.port}/{bwh.database}; {os.cpu_count()} CPU(s)")
        secs_a = run_raw_pipeline(bwh, key, Path(small["observation"]["archive_path"]), a.rows)
        rate_a = a.rows / secs_a
        say(f"(a) gpg --decrypt | psql \\copy (plain text table): {a.rows:,} rows in {secs_a:.2f}s = "
            f"{rate_a:,.0f} rows/s")
        b = run_platform(bwh, key, small, a.rows)
        rate_b = a.rows / b["seconds"]
        say(f"(b) platform ingest (decrypt || COPY, header check, metadata, ledger; 21-file batch): {a.rows:,} rows "
            f"in {b['seconds']:.2f}s = {rate_b:,.0f} rows/s (process incl. start-up {b['process_seconds']:.2f}s); "
            f"peak RSS {b['maxrss_self_mb']:.0f} MB")
        b4 = run_platform(bwh, key, big, a.rows_big)
        say(f"(b) at {a.rows_big:,} rows: {b4['seconds']:.2f}s = {a.rows_big / b4['seconds']:,.0f} rows/s; "
            f"peak RSS {b4['maxrss_self_mb']:.0f} MB")
        say(f"peak RSS of (b): {b['maxrss_self_mb']:.0f} MB at {a.rows:,} rows, {b4['maxrss_self_mb']:.0f} MB at "
            f"{a.rows_big:,} rows")
        if not a.no_multi:
            c = run_platform(bwh, key, small, a.rows, extract="multi_organisation")
            say(f"(c) multi-organisation path ({len(ORGS)} practices): {a.rows:,} rows in {c['seconds']:.2f}s = "
                f"{a.rows / c['seconds']:,.0f} rows/s (COPY into UNLOGGED staging {c['stage_seconds']:.2f}s, "
                f"{len(ORGS)} x INSERT ... SELECT {c['move_seconds']:.2f}s); peak RSS {c['maxrss_self_mb']:.0f} MB")
    say(f"ratio: {rate_b / rate_a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
