"""Reliability: every way a delivery or a run breaks ends with each row in raw exactly once, or the
batch quarantined with a specific reason and nothing of it in raw.

Real parts throughout: the SFTP server on loopback (with its fault injection), gpg, PostgreSQL,
and Airflow's ``dag.test()`` where a DAG is involved. The deliveries are broken with
``im1dev.synth.faults``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psycopg
import pytest

from im1 import specs
from im1.crypto import LocalWriteError
from im1.ingest.errors import QuarantineError
from im1.ingest.pipeline import Pipeline
from im1.transport.sftp import SftpClient
from im1dev.synth import faults
from tests.ingest.conftest import BIG_ROWS, START, batches, events, raw_count, replace_table, run_core

ODS = "Z91101"

RAW_TABLES = [specs.raw_table_name(t) for t in specs.emis_tables()]


def _patients(world) -> int:
    return sum(1 for p in world.patients if p.reg_date <= START)


def _rows_in_batch(world) -> int:
    """Every data row of the published bulk, including the supplier's duplicate SessionUser rows."""
    from im1dev.synth import emis as synth_emis

    snap = synth_emis.snapshot(world, START)
    sessions = len(snap["Appointment_SessionUser"])
    return sum(len(v) for v in snap.values()) + sum(1 for i in range(sessions) if i % 97 == 5)


def _nothing_in_raw(conn, feed_id: str) -> None:
    counts = {t: raw_count(conn, t, feed_id) for t in RAW_TABLES}
    assert set(counts.values()) == {0}, {t: n for t, n in counts.items() if n}


def _quarantined(conn, feed_id: str, words: str) -> str:
    rows = batches(conn, feed_id)
    assert [r[2] for r in rows] == ["quarantined"], rows
    assert words in rows[0][5], rows[0][5]
    return rows[0][5]


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (lambda site, folder: faults.truncate(folder, "Admin_Patient", keep=0.6), "truncated input"),
        (lambda site, folder: faults.encrypt_to_wrong_key(folder, "Admin_Patient", wrong=site.other_keys),
         "no secret key"),
        (lambda site, folder: faults.tamper(folder, "Admin_Patient"), "integrity check failed"),
        (lambda site, folder: faults.malform_row(folder, "Admin_Patient", site.keys, row=5),
         "unterminated CSV quoted field"),
    ],
    ids=["truncated", "wrong_key", "tampered", "malformed_csv"],
)
def test_bad_file_quarantines_the_batch_and_loads_nothing(site, loader, fault, words):
    world = site.world([ODS])
    folder = site.publish(world, 0)
    changed = fault(site, folder)
    assert changed.files and changed.detail
    feed = site.feed(f"emis_bad_{changed.kind}", [ODS])
    [result] = run_core(site, feed)
    assert isinstance(result, QuarantineError) and words in str(result)
    _nothing_in_raw(loader, feed.id)
    reason = _quarantined(loader, feed.id, words)
    assert "Admin_Patient" in reason  # the file is named
    assert any(words in e for e in events(loader, feed.id))
    # a quarantined batch is not tried again by later runs until it is released
    assert run_core(site, feed) == []


def test_truncated_file_redelivered_and_released_loads_exactly_once(site, loader, capsys):
    from im1 import cli

    world = site.world([ODS])
    folder = site.publish(world, 0)
    good = faults.table_file(folder, "Admin_Patient").read_bytes()
    faults.truncate(folder, "Admin_Patient", keep=0.5)
    feed = site.feed("emis_redelivered", [ODS])
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError)
    batch_id = loader.execute("select batch_id from ingest.batches where feed_id = %s", (feed.id,)).fetchone()[0]
    # the supplier re-delivers the file under the same name; the operator releases the batch
    faults.table_file(folder, "Admin_Patient").write_bytes(good)
    assert cli.main(["ingest", "release", str(batch_id), "--reason", "supplier re-sent the patient file"]) == 0
    assert "released" in capsys.readouterr().out
    assert batches(loader, feed.id)[0][2] == "released"
    [ok] = run_core(site, feed)
    assert ok.status == "loaded" and ok.rows == _rows_in_batch(world)
    assert raw_count(loader, "admin_patient", feed.id) == _patients(world)
    assert batches(loader, feed.id)[0][2] == "loaded"
    assert any("re-fetched with a new checksum" in e for e in events(loader, feed.id))
    assert run_core(site, feed) == [] and raw_count(loader, "admin_patient", feed.id) == _patients(world)
    # a loaded batch cannot be released
    assert cli.main(["ingest", "release", str(batch_id)]) == 2
    assert cli.main(["ingest", "status", "--feed", feed.id]) == 0
    out = capsys.readouterr().out
    assert feed.id in out and "loaded" in out and "released: supplier re-sent the patient file" in out


def test_duplicate_delivery_loads_once(site, loader):
    world = site.world([ODS])
    folder = site.publish(world, 0)
    dup = faults.duplicate_delivery(folder)
    assert len(dup.files) == 21
    feed = site.feed("emis_duplicate", [ODS])
    [ok] = run_core(site, feed)
    assert ok.status == "loaded"
    assert raw_count(loader, "admin_patient", feed.id) == _patients(world)
    assert any("duplicate copies ignored" in e and "_resend" in e for e in events(loader, feed.id))
    # the same batch delivered yet again later: nothing new
    faults.duplicate_delivery(folder, into="20261104")
    assert run_core(site, feed) == []
    assert raw_count(loader, "admin_patient", feed.id) == _patients(world)
    assert len(batches(loader, feed.id)) == 1


def test_extra_column_is_loaded_kept_and_reported(site, loader):
    world = site.world([ODS])
    folder = site.publish(world, 0)
    change = faults.add_unknown_column(folder, "Admin_Patient", site.keys, column="SupplierNewColumn",
                                       value=lambda i: f"v{i}")
    assert change.extra["rows"] == _patients(world)
    feed = site.feed("emis_extra_col", [ODS])
    [ok] = run_core(site, feed)
    assert ok.status == "loaded"
    got = loader.execute("select count(*), count(distinct suppliernewcolumn), min(suppliernewcolumn) "
                         "from raw_emis.admin_patient where _feed_id = %s", (feed.id,)).fetchone()
    assert got == (_patients(world), _patients(world), "v1")
    unknown = loader.execute("select f.unknown_columns from ingest.files f join ingest.batches b using (batch_id) "
                             "where b.feed_id = %s and f.table_name = 'Admin_Patient'", (feed.id,)).fetchone()[0]
    assert unknown == ["SupplierNewColumn"]
    assert any("Admin_Patient" in e and "column(s) not in the EMIS specification, kept: SupplierNewColumn" in e
               for e in events(loader, feed.id))


def test_v80_batch_loads_with_its_version(site, loader):
    from im1.crypto import Keyring

    world = site.world([ODS])
    with Keyring() as kr:
        kr.import_key(site.keys.public_armored)
        change = faults.publish_v80(world, site.feed_dir, on=START, extract_ts=START_TS, batch_number=1, keyring=kr,
                                    recipient=site.keys.fingerprint)
    assert change.kind == "v8.0" and len(change.files) == 21
    feed = site.feed("emis_v80", [ODS])
    [ok] = run_core(site, feed)
    assert ok.status == "loaded"
    assert loader.execute("select schema_version from ingest.batches where feed_id = %s", (feed.id,)).fetchone() == (
        "8.0",)
    slot = loader.execute("select f.schema_version from ingest.files f join ingest.batches b using (batch_id) "
                          "where b.feed_id = %s and f.table_name = 'Appointment_Slot'", (feed.id,)).fetchone()
    assert slot == ("8.0",)
    assert raw_count(loader, "admin_patient", feed.id) == _patients(world)


def test_older_batch_arriving_late_is_loaded_and_flagged(site, loader):
    # each day's batch holds other data (the same content again would be held as a re-send)
    worlds = [site.world([ODS], seed=7 + day) for day in range(4)]
    site.publish(worlds[1], 1)  # day 2's batch arrives first
    feed = site.feed("emis_late", [ODS])
    [day2] = run_core(site, feed)
    assert day2.late is False
    site.publish(worlds[0], 0)  # then day 1's, late
    [day1] = run_core(site, feed)
    assert day1.status == "loaded" and day1.late is True
    got = [(r[1].split("@")[1], r[2], r[4]) for r in batches(loader, feed.id)]
    assert got == [("20261102020000", "loaded", True), ("20261103020000", "loaded", False)]
    # two batches waiting at once are applied in extract-timestamp order, neither late
    site.publish(worlds[2], 2)
    site.publish(worlds[3], 3)
    later = run_core(site, feed)
    assert [r.late for r in later] == [False, False]
    assert raw_count(loader, "admin_patient", feed.id) == sum(_patients(w) for w in worlds)


START_TS = __import__("datetime").datetime.combine(START, __import__("datetime").time(2))


def _watch_copy(url: str, table: str, stop: threading.Event, seen: dict, *, kill: bool) -> None:
    """Wait for the loader's COPY into ``table``; terminate its backend if ``kill``."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute(
                "select pid from pg_stat_activity where usename = 'loader' and state = 'active' "
                "and query ilike %s", (f"copy%{table}%",)).fetchone()
            if row:
                seen["pid"] = row[0]
                time.sleep(0.3)  # well inside the COPY
                if kill:
                    seen["killed"] = conn.execute("select pg_terminate_backend(%s)", (row[0],)).fetchone()[0]
                return
            time.sleep(0.02)


def test_database_connection_killed_mid_copy(site, loader, warehouse, big_observations):
    world = site.world([ODS])
    folder = site.publish(world, 0)
    replace_table(folder, "CareRecord_Observation", big_observations)
    feed = site.feed("emis_killed_copy", [ODS])
    pipe = Pipeline(feed, site.loader_url, key=site.pgp)
    with SftpClient(site.sftp_settings()) as c:
        [plan] = pipe.discover(c).ready
        fetched = pipe.fetch(c, plan)
    stop, seen = threading.Event(), {}
    killer = threading.Thread(target=_watch_copy, args=(warehouse.admin_url, "carerecord_observation", stop, seen),
                              kwargs={"kill": True})
    killer.start()
    try:
        with pytest.raises(psycopg.OperationalError, match="terminat"):
            pipe.load(ODS, fetched)
    finally:
        stop.set()
        killer.join()
    assert seen.get("killed") is True
    _nothing_in_raw(loader, feed.id)
    [(org, key, status, rows, late, error)] = batches(loader, feed.id)
    assert status == "failed" and "terminat" in error
    assert any("load failed (will be retried)" in e for e in events(loader, feed.id))
    # the retry loads it exactly once
    ok = pipe.load(ODS, fetched)
    assert ok.status == "loaded"
    got = loader.execute("select count(*), count(distinct observationguid), min(_row_number), max(_row_number) "
                         "from raw_emis.carerecord_observation where _feed_id = %s", (feed.id,)).fetchone()
    assert got == (BIG_ROWS, BIG_ROWS, 1, BIG_ROWS)
    assert raw_count(loader, "admin_patient", feed.id) == _patients(world)


LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    from im1.config import load_config
    from im1.ingest.credentials import PgpKey
    from im1.ingest.model import FetchedBatch
    from im1.ingest.pipeline import Pipeline
    args = json.loads(sys.argv[1])
    feed = load_config(args["feeds"]).feed(args["feed"])
    key = PgpKey(open(args["key"]).read(), args["passphrase"])
    Pipeline(feed, args["url"], key=key).load(args["ods"], FetchedBatch.from_dict(args["fetched"]))
""")


def test_load_process_killed_then_rerun_loads_exactly_once(site, loader, warehouse, big_observations, tmp_path):
    import json

    world = site.world([ODS])
    folder = site.publish(world, 0)
    replace_table(folder, "CareRecord_Observation", big_observations)
    feed = site.feed("emis_killed_task", [ODS])
    pipe = Pipeline(feed, site.loader_url, key=site.pgp)
    with SftpClient(site.sftp_settings()) as c:
        [plan] = pipe.discover(c).ready
        fetched = pipe.fetch(c, plan)
    keyfile = tmp_path / "key.asc"
    keyfile.write_text(site.keys.secret_armored)
    args = {"feeds": os.environ["IM1_FEEDS_FILE"], "feed": feed.id, "key": str(keyfile),
            "passphrase": site.keys.passphrase, "ods": ODS, "fetched": fetched.to_dict(), "url": site.loader_url}
    stop, seen = threading.Event(), {}
    watcher = threading.Thread(target=_watch_copy, args=(warehouse.admin_url, "carerecord_observation", stop, seen),
                               kwargs={"kill": False})
    watcher.start()
    proc = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, json.dumps(args)], env=dict(os.environ))
    try:
        watcher.join(timeout=60)
        assert "pid" in seen, "the load never started its COPY"
        proc.send_signal(signal.SIGKILL)  # the worker dies mid-COPY, as an OOM kill or a lost node would
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    # the ledger still says 'loading' (nobody could record anything); raw has nothing of the batch
    assert batches(loader, feed.id)[0][2] == "loading"
    deadline = time.monotonic() + 30
    while loader.execute("select count(*) from pg_stat_activity where pid = %s", (seen["pid"],)).fetchone()[0]:
        assert time.monotonic() < deadline, "the killed loader's backend did not go away"
        time.sleep(0.1)
    _nothing_in_raw(loader, feed.id)
    # the re-run (Airflow would retry the task) loads it exactly once
    ok = pipe.load(ODS, fetched)
    assert ok.status == "loaded"
    assert raw_count(loader, "carerecord_observation", feed.id) == BIG_ROWS
    assert loader.execute("select count(distinct observationguid) from raw_emis.carerecord_observation "
                          "where _feed_id = %s", (feed.id,)).fetchone() == (BIG_ROWS,)


def test_archive_matches_the_supplier_file(site, loader):
    """The archived original is byte-identical to what the supplier published (checksum in the ledger)."""
    world = site.world([ODS])
    folder = site.publish(world, 0)
    feed = site.feed("emis_archive", [ODS])
    run_core(site, feed)
    rows = loader.execute("select f.file_name, f.sha256, f.archive_path from ingest.files f join ingest.batches b "
                          "using (batch_id) where b.feed_id = %s", (feed.id,)).fetchall()
    assert len(rows) == 21
    for name, sha, archived in rows:
        assert sha == hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert hashlib.sha256(open(archived, "rb").read()).hexdigest() == sha


@contextlib.contextmanager
def _local_writes_fail_after(limit: int):
    """Every process started inside (gpg) can write at most ``limit`` bytes to a file: past it, the
    write fails half way through the plaintext, as on a full disk (gpg is stopped by SIGXFSZ, which
    Python's subprocess restores to its default; /dev/full covers the ENOSPC wording in test_crypto)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_local_write_failure_while_decrypting_loads_nothing_and_blames_the_machine(site, loader, big_observations):
    """Issue 13: gpg reports DECRYPTION_OKAY even when it could not write all of the plaintext (a
    full disk); the cut file must not be loaded, and the delivery must not be quarantined for it."""
    world = site.world([ODS])
    folder = site.publish(world, 0)
    replace_table(folder, "CareRecord_Observation", big_observations)
    feed = site.feed("emis_disk_full", [ODS])
    pipe = Pipeline(feed, site.loader_url, key=site.pgp)
    with SftpClient(site.sftp_settings()) as c:
        [plan] = pipe.discover(c).ready
        fetched = pipe.fetch(c, plan)
    # the observation file's plaintext is ~60 MB; the write fails after 8 MiB (mid-row)
    with _local_writes_fail_after(8 << 20), pytest.raises(LocalWriteError, match="a local fault, not the delivery"):
        pipe.load(ODS, fetched)
    _nothing_in_raw(loader, feed.id)
    [(org, key, status, rows, late, error)] = batches(loader, feed.id)
    assert status == "failed" and "CareRecord_Observation" in error and "file size limit" in error
    # once the machine is fixed, the retry loads every row exactly once
    ok = pipe.load(ODS, fetched)
    assert ok.status == "loaded"
    assert raw_count(loader, "carerecord_observation", feed.id) == BIG_ROWS
