"""``make demo``: the whole platform end to end on this machine, with no real data.

1. start the embedded PostgreSQL (unless ``IM1_WAREHOUSE_URL`` is set) and bootstrap it;
2. create demo keys *at run time* (a PGP key pair for the consumer, SSH host and client keys)
   and the Airflow connections that hold them (``.im1/secrets``, never in the repo);
3. play the supplier: generate the synthetic deliveries for every demo feed in the feed config:
   EMIS feeds on a loopback SFTP host (encrypted to the demo public key, served from a real SFTP
   server) and TPP feeds reading a local gateway folder with synthetic (``Z``) practices (SystmOne
   batch folders written there: a bulk, daily deltas, and a re-bulk of SRCode on day 3);
4. run the real DAGs day by day (``airflow dags test``): ingest per feed, then the dbt transform;
5. print the list-size mart (read as ``mart_reader``, the restricted role that may see unsuppressed
   marts) and the published appointments mart as the BI tools see it (``bi_reader``: small numbers
   suppressed); check every mart against the synthetic supplier's ground truth (MATCH/MISMATCH per
   mart; the demo fails on a mismatch) and the TPP staging models' current state against the
   supplier's own final snapshot, table by table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from im1 import paths
from im1.config import Feed, FeedConfig, load_config
from im1.crypto import Keyring
from im1.warehouse import BI_READER, MART_READER, Warehouse
from im1.warehouse.bootstrap import bootstrap, ensure_database
from im1dev import reconcile, runtime
from im1dev.sftp_server import generate_ed25519, load_private_key, public_key_line
from im1dev.synth import casebook, supplier, tpp, truth
from im1dev.synth.world import World, build_world

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEMO_START = dt.date(2026, 11, 1)  # data date of the bulk; each extract is stamped the next morning
DEMO_YEARS = 3.0  # years of clinical history in the demo practices
SFTP_USER = "im1-demo"


def say(msg: str) -> None:
    print(f"[im1 demo] {msg}", flush=True)


@dataclass(frozen=True)
class DemoKeys:
    pgp_fingerprint: str
    pgp_public_file: Path
    pgp_secret_file: Path
    pgp_passphrase: str
    ssh_host_key_file: Path
    ssh_client_key_file: Path

    @property
    def host_key_line(self) -> str:
        return public_key_line(load_private_key(self.ssh_host_key_file))

    @property
    def client_public_line(self) -> str:
        return public_key_line(load_private_key(self.ssh_client_key_file))


def demo_dir() -> Path:
    return paths.state_dir() / "demo"


def ensure_keys(keys_dir: Path | None = None) -> DemoKeys:
    """Generate the demo key material once (kept in the git-ignored state folder, mode 0600)."""
    d = paths.private_dir(keys_dir or demo_dir() / "keys")
    pub, sec, pw, fpr = d / "pgp_public.asc", d / "pgp_secret.asc", d / "pgp_passphrase", d / "pgp_fingerprint"
    if not (pub.exists() and sec.exists() and pw.exists() and fpr.exists()):
        passphrase = secrets.token_urlsafe(24)
        with Keyring(cache_passphrase=True) as kr:
            kp = kr.generate("IM1 demo consumer", "demo-consumer@example.invalid", passphrase)
        for path, text in ((pub, kp.public_armored), (sec, kp.secret_armored), (pw, passphrase),
                           (fpr, kp.fingerprint)):
            path.write_text(text)
            path.chmod(0o600)
    host, client = d / "ssh_host_ed25519", d / "ssh_client_ed25519"
    if not host.exists():
        generate_ed25519(host)
    if not client.exists():
        generate_ed25519(client)
    client_pub = d / "ssh_client_ed25519.pub"
    if not client_pub.exists():
        client_pub.write_text(public_key_line(load_private_key(client)) + "\n")
    return DemoKeys(fpr.read_text().strip(), pub, sec, pw.read_text().strip(), host, client)


def demo_hosts() -> set[str]:
    """Hosts on which the demo plays the supplier: loopback, and the Compose stack's SFTP service
    when ``IM1_DEMO_SFTP_HOST`` names it (``supplier-sftp`` in docker-compose.yaml)."""
    extra = os.environ.get("IM1_DEMO_SFTP_HOST", "").strip()
    return LOOPBACK | ({extra} if extra else set())


def demo_feeds(cfg: FeedConfig) -> list[Feed]:
    hosts = demo_hosts()
    return [
        f
        for f in cfg.enabled_feeds
        if f.supplier == "emis" and f.transport.kind == "sftp" and f.transport.host in hosts
    ]


def demo_tpp_feeds(cfg: FeedConfig) -> list[Feed]:
    """TPP feeds the demo plays the supplier for: a local gateway folder and only synthetic practices
    (ODS codes starting with Z), so the demo never writes into a real practice's gateway."""
    return [
        f
        for f in cfg.enabled_feeds
        if f.supplier == "tpp" and f.transport.kind == "folder"
        and all(o.ods_code.startswith("Z") for o in f.organisations)
    ]


def write_connections(feeds: list[Feed], keys: DemoKeys) -> Path:
    """Add the demo feeds' SFTP and PGP connections to the local secrets file."""
    path = runtime.connections_file()
    paths.private_dir(path.parent)
    conns = json.loads(path.read_text()) if path.exists() else {}
    for f in feeds:
        conns[f.transport.conn_id] = {
            "conn_type": "sftp",
            "host": f.transport.host,
            "port": f.transport.port,
            "login": SFTP_USER,
            "extra": {"key_file": str(keys.ssh_client_key_file), "host_key": keys.host_key_line},
        }
        conns[f.pgp_conn_id] = {
            "conn_type": "generic",
            "password": keys.pgp_passphrase,
            "extra": {"private_key_file": str(keys.pgp_secret_file)},
        }
    path.write_text(json.dumps(conns, indent=2) + "\n")
    path.chmod(0o600)
    return path


def sftp_root() -> Path:
    return demo_dir() / "supplier" / "sftp"


def world_for(feed: Feed, *, days: int, patients: int, seed: int, start: dt.date = DEMO_START,
              years: float = DEMO_YEARS, volume: float = 1.0) -> World:
    """The synthetic population behind a demo feed, with the feed's own identities (GUIDs, ODS codes)."""
    return build_world(
        supplier=feed.supplier,
        seed=seed + sum(map(ord, feed.id)),
        ods_codes=[o.ods_code for o in feed.organisations],
        org_guids={o.ods_code: feed.supplier_org_id(o) for o in feed.organisations},
        agreement_guid=feed.sharing_agreement_guid,
        patients_per_practice=patients,
        start=start,
        days=days,
        years=years,
        volume=volume,
        inactive_practices=1,
    )


def publish_day(world: World, feed: Feed, day: int, keys: DemoKeys) -> supplier.Published:
    """Put day ``day``'s batch (0 = bulk, then deltas) for ``feed`` on the demo SFTP site, encrypted."""
    # the remote layout mirrors the feed's path: <root><transport.path>/<yyyyMMdd>/<file>
    feed_dir = sftp_root() / feed.transport.path.strip("/")
    with Keyring() as kr:
        kr.import_key(Path(keys.pgp_public_file).read_text())
        return supplier.publish_emis_day(world, day, feed_dir, keyring=kr, recipient=keys.pgp_fingerprint)


def tpp_rebulk_day(days: int) -> int | None:
    """The demo re-sends SRCode in full on day 3 (as TPP does now and then), when it runs that long."""
    return 2 if days >= 3 else None


def publish_tpp_day(world: World, feed: Feed, day: int, days: int) -> supplier.Published:
    """Write day ``day``'s SystmOne batch folder (0 = bulk, then deltas) into the feed's gateway folder."""
    gateway = feed.transport.resolved()
    gateway.mkdir(parents=True, exist_ok=True)
    return supplier.publish_tpp_day(world, day, gateway, rebulk_day=tpp_rebulk_day(days))


def _wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo SFTP server exited early (code {proc.returncode})")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the demo SFTP server did not listen on {host}:{port} within {timeout}s")


def start_sftp_server(feed: Feed, keys: DemoKeys, env: dict[str, str]) -> subprocess.Popen:
    host, port = feed.transport.host, feed.transport.port
    with socket.socket() as s:
        if s.connect_ex((host, port)) == 0:
            raise RuntimeError(
                f"port {port} on {host} is already in use; the demo SFTP server needs it "
                "(set IM1_DEMO_SFTP_PORT to another port and run again)"
            )
    sftp_root().mkdir(parents=True, exist_ok=True)
    log = open(demo_dir() / "sftp-server.log", "ab")
    proc = subprocess.Popen(
        [
            str(runtime.venv_bin() / "im1"), "sftp-server",
            "--root", str(sftp_root()), "--host", host, "--port", str(port),
            "--host-key", str(keys.ssh_host_key_file), "--user", SFTP_USER,
            "--authorized-key", str(keys.ssh_client_key_file) + ".pub",
        ],
        env=env, stdout=log, stderr=log,
    )
    _wait_port(host, port, proc)
    return proc


def prepare_airflow(env: dict[str, str], cfg: FeedConfig, *, slots: int = 4) -> None:
    """Migrate the Airflow metadata database and create one pool per supplier host (``slots`` each)."""
    runtime.run(runtime.airflow_cmd("db", "migrate"), env, quiet=True)
    pools = {f.pool: {"slots": slots, "description": f"Connections to {f.pool} (im1)"} for f in cfg.enabled_feeds}
    pools_file = paths.state_dir() / "airflow" / "im1_pools.json"
    pools_file.parent.mkdir(parents=True, exist_ok=True)
    pools_file.write_text(json.dumps(pools))
    runtime.run(runtime.airflow_cmd("pools", "import", str(pools_file)), env, quiet=True)


def ensure_manifest(env: dict[str, str]) -> None:
    manifest = paths.dbt_project_dir() / "target" / "manifest.json"
    if not manifest.exists():
        runtime.run(runtime.dbt_cmd("parse", "--quiet"), env, quiet=True)


def run_dag(dag_id: str, logical_date: dt.datetime, env: dict[str, str]) -> float:
    logs = paths.private_dir(demo_dir() / "logs")
    t0 = time.monotonic()
    res = runtime.run(runtime.airflow_cmd("dags", "test", dag_id, logical_date.isoformat()), env,
                      check=False, quiet=True)
    secs = time.monotonic() - t0
    log_file = logs / f"{dag_id}__{logical_date:%Y%m%d}.log"
    log_file.write_text(res.stdout or "")
    failed = res.returncode != 0 or "state=failed" in (res.stdout or "") or "DagRun Finished" not in (res.stdout or "")
    if failed:
        tail = "\n".join((res.stdout or "").splitlines()[-40:])
        raise RuntimeError(f"DAG {dag_id} failed for {logical_date:%Y-%m-%d} (log: {log_file}):\n{tail}")
    return secs


def _demo_owned(path: Path) -> bool:
    """A folder the demo may empty: inside the state folder (or the project's default ``.im1``)."""
    path = path.resolve()
    return any(path.is_relative_to(p.resolve()) for p in (paths.state_dir(), paths.project_root() / ".im1"))


def fresh_start(wh: Warehouse, feeds: list[Feed]) -> None:
    """Start every demo from a clean slate, so its numbers are reproducible.

    On the embedded warehouse the warehouse database is recreated (Airflow's run history lives in
    its own database and is kept). On a server named by IM1_WAREHOUSE_URL only the demo feeds'
    raw rows and ledger entries are removed; nothing else is touched.
    """
    import shutil

    from psycopg import sql

    if wh.embedded:
        with psycopg.connect(wh.url_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(wh.database)))
    else:
        with psycopg.connect(wh.admin_url) as conn:
            ids = [f.id for f in feeds]
            tables = conn.execute(
                "select table_schema, table_name from information_schema.columns "
                "where column_name = '_feed_id' and table_schema in ('raw_emis', 'raw_tpp')").fetchall()
            for schema, table in tables:
                conn.execute(sql.SQL("delete from {} where _feed_id = any(%s)").format(
                    sql.Identifier(schema, table)), (ids,))
            conn.execute("delete from ingest.batches where feed_id = any(%s)", (ids,))
    for f in feeds:
        shutil.rmtree(paths.state_dir() / "archive" / f.id, ignore_errors=True)
        if f.transport.kind == "folder":
            gateway = f.transport.resolved()
            if _demo_owned(gateway):
                shutil.rmtree(gateway, ignore_errors=True)
            elif gateway.exists():
                say(f"{f.id}: gateway {gateway} is outside the demo's state folder; not emptied (batch folders "
                    "already there are loaded as they are)")
    shutil.rmtree(sftp_root(), ignore_errors=True)


def read_mart(wh: Warehouse) -> list[tuple]:
    """Read the unsuppressed mart as mart_reader (BI tools, as bi_reader, see only the published schema)."""
    with psycopg.connect(wh.role_url(MART_READER)) as conn:
        return conn.execute(
            "select practice_code, snapshot_date, sex, age_band, patients from marts.mart_list_size as m "
            "where snapshot_date = (select max(snapshot_date) from marts.mart_list_size as l "
            "                       where l.practice_code = m.practice_code) "
            "order by practice_code, snapshot_date, age_band_order, sex"
        ).fetchall()


def print_published_appointments(wh: Warehouse) -> None:
    """The latest full month of published.pub_appointment_rates, read as bi_reader as a BI tool would:
    totals summed from the exact counts then rounded, rates from the rounded counts (never a sum of
    published cells)."""
    with psycopg.connect(wh.role_url(BI_READER)) as conn:
        rows = conn.execute(
            "select practice_code, appointment_month, gpad_mode, appointments, attended, dna, unknown_status, "
            "dna_rate_pct from published.pub_appointment_rates p "
            "where hcp_type = 'ALL' and appointment_month = (select max(appointment_month) - interval '1 month' "
            "                           from published.pub_appointment_rates q where q.practice_code = p.practice_code) "
            "order by 1, gpad_mode = 'ALL' desc, 3").fetchall()
    for prac in sorted({r[0] for r in rows}):
        month = next(r[1] for r in rows if r[0] == prac)
        print(f"\npublished.pub_appointment_rates (as bi_reader) - practice {prac}, {month:%B %Y}: counts rounded "
              "to 5 (* = 1-7, suppressed), DNA rate = DNA / (attended + DNA) from the rounded counts")
        print(f"  {'mode':<24} {'all':>6} {'attended':>9} {'DNA':>6} {'unknown':>8} {'DNA rate':>9}")
        for _p, _m, mode, n, att, dna, unk, rate in (r for r in rows if r[0] == prac):
            def show(v):
                return "*" if v is None else str(v)
            print(f"  {mode:<24} {show(n):>6} {show(att):>9} {show(dna):>6} {show(unk):>8} "
                  f"{'-' if rate is None else f'{rate}%':>9}")


def check_marts(wh: Warehouse, worlds: list[World], as_of: dt.date) -> bool:
    """Compare every mart with the ground truth of the worlds on data date ``as_of``; print the result."""
    expected: dict[str, list[dict]] = {}
    for w in worlds:
        for table, rows in truth.compute(w, as_of).items():
            expected.setdefault(table, []).extend(rows)
    with psycopg.connect(wh.role_url(MART_READER)) as conn:
        diffs = reconcile.compare(conn, expected)
    say(f"marts vs the synthetic supplier's ground truth on {as_of}:")
    ok = reconcile.report(diffs)
    # the QOF casebook: every case was planted as a patient of every practice; the warehouse's
    # decision for each (population, register, indicator and why) must be the case's expected answer
    with psycopg.connect(wh.admin_url) as conn:
        check = casebook.check_warehouse(conn, worlds)
    say(f"QOF casebook through the real ingest: {check.summary()}")
    for line in check.mismatches[:20]:
        print(f"      MISMATCH {line}")
    return ok and check.ok


def print_qof(wh: Warehouse) -> None:
    """QOF indicators at the latest achievement date (31 March), as the BI role sees them (published)."""
    with psycopg.connect(wh.role_url(BI_READER)) as conn:
        rows = conn.execute(
            "select practice_code, reference_date, indicator, numerator, denominator, pca_count, achievement_pct "
            "from published.pub_qof_indicators p where reference_kind = 'achievement' and reference_date = "
            "(select max(reference_date) from published.pub_qof_indicators q where q.practice_code = p.practice_code "
            " and q.reference_kind = 'achievement') order by 1, 3").fetchall()
    for prac in sorted({r[0] for r in rows}):
        day = next(r[1] for r in rows if r[0] == prac)
        print(f"\npublished.pub_qof_indicators (as bi_reader) - practice {prac}, achievement date {day} "
              "(counts of 1-7 suppressed, others rounded to 5)")
        print(f"  {'indicator':<10}{'numerator':>10}{'denominator':>12}{'PCAs':>6}{'achievement %':>15}")
        for _p, _d, ind, num, den, pca, pct in (r for r in rows if r[0] == prac):
            def show(v):
                return "*" if v is None else str(v)
            print(f"  {ind:<10}{show(num):>10}{show(den):>12}{show(pca):>6}{show(pct):>15}")


def print_mart(rows: list[tuple]) -> None:
    by_prac: dict[tuple, dict[str, dict[str, int]]] = {}
    for prac, snap, sex, band, n in rows:
        by_prac.setdefault((prac, snap), {}).setdefault(band, {})[sex] = n
    for (prac, snap), bands in by_prac.items():
        print(f"\nmarts.mart_list_size - practice {prac}, registered patients on {snap}")
        print(f"  {'age band':<9}{'female':>8}{'male':>8}{'other':>8}{'all':>8}")
        tot = {"female": 0, "male": 0, "other": 0}
        for band, sexes in bands.items():
            f, m = sexes.get("female", 0), sexes.get("male", 0)
            o = sum(v for k, v in sexes.items() if k not in ("female", "male"))
            tot["female"] += f
            tot["male"] += m
            tot["other"] += o
            print(f"  {band:<9}{f:>8}{m:>8}{o:>8}{f + m + o:>8}")
        print(f"  {'all':<9}{tot['female']:>8}{tot['male']:>8}{tot['other']:>8}{sum(tot.values()):>8}")


def check_tpp_staging(wh: Warehouse, feed: Feed, world: World, last: dt.date) -> bool:
    """Each TPP staging model's rows for the practice = the supplier's own snapshot on the last data date.

    Staging reduces every delivered batch (bulk, deltas, the re-bulk) to the current state; the
    snapshot is what the supplier holds. Shared-care rows are in both (staging flags them)."""
    ods = feed.organisations[0].ods_code
    snap = tpp.snapshot(world, last)
    ok = True
    with psycopg.connect(wh.admin_url) as conn:
        for table, rows in sorted(snap.items()):
            if table in tpp.ALWAYS_EMPTY:
                continue
            got = conn.execute(f"select count(*) from staging.stg_tpp__{table.lower()} "  # noqa: S608 - fixed names
                               "where practice_code = %s", (ods,)).fetchone()[0]
            if got != len(rows):
                ok = False
                say(f"  {feed.id} staging.stg_tpp__{table.lower()}: {got} rows, the supplier holds {len(rows)}")
        shared = conn.execute("select count(*) from staging.stg_tpp__srcode where practice_code = %s "
                              "and is_shared_care", (ods,)).fetchone()[0]
    say(f"TPP staging ({feed.id}, practice {ods}) vs the supplier's final snapshot: {'MATCH' if ok else 'MISMATCH'} "
        f"({sum(len(r) for r in snap.values()):,} current rows in {len(snap)} tables; {shared} SRCode rows flagged "
        "as shared care)")
    return ok


def run_demo(*, days: int = 1, patients: int = 300, seed: int = 42) -> int:
    t_start = time.monotonic()
    cfg = load_config()
    emis_feeds = demo_feeds(cfg)
    tpp_feeds = demo_tpp_feeds(cfg)
    feeds = emis_feeds + tpp_feeds
    if not feeds:
        raise SystemExit(
            f"{paths.feeds_file()} declares no demo feed (an EMIS feed on a loopback SFTP host, or a TPP feed "
            "reading a local gateway folder for synthetic Z practices); the demo plays the supplier for those only"
        )
    with runtime.warehouse_up() as wh:
        say(f"warehouse: {'embedded PostgreSQL' if wh.embedded else 'IM1_WAREHOUSE_URL'} "
            f"at {wh.host}:{wh.port}/{wh.database}")
        if wh.embedded or os.environ.get("IM1_DEMO_RESET", "1") == "1":
            fresh_start(wh, feeds)
        bootstrap(wh)
        ensure_database(wh, "airflow")
        env = runtime.local_env(wh)
        keys = ensure_keys()
        write_connections(emis_feeds, keys)
        say("demo keys and Airflow connections ready (generated at run time under .im1/, git-ignored)")
        prepare_airflow(env, cfg)
        ensure_manifest(env)
        worlds = {f.id: world_for(f, days=days, patients=patients, seed=seed) for f in feeds}
        server = start_sftp_server(emis_feeds[0], keys, env) if emis_feeds else None
        if server:
            say(f"supplier SFTP server on {emis_feeds[0].transport.host}:{emis_feeds[0].transport.port} "
                "(pinned host key)")
        try:
            for day in range(days):
                on = DEMO_START + dt.timedelta(days=day)
                for f in emis_feeds:
                    pub = publish_day(worlds[f.id], f, day, keys)
                    say(f"day {day + 1}/{days} (data {on}): supplier published {'a bulk' if day == 0 else 'a delta'}"
                        f" for {f.id}: {len(pub.files)} encrypted files, {sum(pub.rows.values()):,} rows")
                for f in tpp_feeds:
                    pub = publish_tpp_day(worlds[f.id], f, day, days)
                    kind = ("a bulk" if day == 0 else "a delta with SRCode re-sent in full"
                            if day == tpp_rebulk_day(days) else "a delta")
                    say(f"day {day + 1}/{days} (data {on}): TPP gateway got {kind} for {f.id}: folder "
                        f"{pub.files[0].parent.name}, {len(pub.files)} files, {sum(pub.rows.values()):,} rows")
                # the run whose data interval ends at 06:00 (London) on the extract day loads that extract
                extract_day = World.extract_ts(on).date()
                logical = dt.datetime.combine(extract_day, dt.time(6, 0), tzinfo=ZoneInfo("Europe/London"))
                for f in feeds:
                    secs = run_dag(f.dag_id, logical, env)
                    how = "fetched, decrypted and loaded" if f.supplier == "emis" else "copied, decoded and loaded"
                    say(f"  {f.dag_id}: {how} in {secs:.1f}s")
                secs = run_dag("im1_transform", logical, env)
                say(f"  im1_transform (dbt via cosmos): built and tested in {secs:.1f}s")
        finally:
            if server:
                server.terminate()
                server.wait(timeout=10)
        rows = read_mart(wh)
        print_mart(rows)
        print_published_appointments(wh)
        print_qof(wh)
        last = DEMO_START + dt.timedelta(days=days - 1)
        # every mart, for the practices of both suppliers, against the synthetic supplier's truth
        ok = check_marts(wh, [worlds[f.id] for f in feeds], last)
        for f in tpp_feeds:
            ok = check_tpp_staging(wh, f, worlds[f.id], last) and ok
    say(f"done in {time.monotonic() - t_start:.0f}s. Explore the runs with `make airflow` "
        "(http://localhost:8080); the embedded PostgreSQL has been stopped.")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(days=int(os.environ.get("IM1_DEMO_DAYS", "1"))))
