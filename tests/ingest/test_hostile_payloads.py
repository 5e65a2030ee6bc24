"""Hostile deliveries (issue 13) through the real pipeline: a compression bomb, a wrong passphrase
for our own key, and header rows no retry can load. Real SFTP server, gpg and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from psycopg import sql

from im1.crypto import BadPassphraseError, Keyring, gpg_binary
from im1.ingest.credentials import PgpKey
from im1.ingest.errors import QuarantineError
from im1.ingest.pipeline import Pipeline
from im1.transport.sftp import SftpClient
from im1dev.synth import faults
from tests.ingest.conftest import batches, events, raw_count, replace_table, run_core

ODS = "Z91101"


def _gpg_children() -> list[int]:
    """This process's child gpg processes, running or not yet reaped (zombies)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == "gpg" and int(fields[1]) == os.getpid():
            found.append(int(proc.name))
    return found


def _bomb(site, folder: Path, table: str, plaintext: int) -> Path:
    """``table``'s file as a compression bomb: its real header, then its first row again and again
    (``plaintext`` bytes of valid CSV), compressed to a few tens of KB by the gpg command line."""
    src = faults.table_file(folder, table)
    with Keyring() as kr:
        kr.import_key(site.keys.secret_armored, site.keys.passphrase)
        kr.decrypt_file(src, site.tmp / "real.csv", passphrase=site.keys.passphrase)
    header, row = (site.tmp / "real.csv").read_bytes().split(b"\r\n")[:2]
    (site.tmp / "real.csv").unlink()
    out = site.tmp / "bomb.csv.gpg"
    with Keyring() as kr:
        kr.import_key(site.keys.public_armored)
        gpg = subprocess.Popen([gpg_binary(), "--homedir", str(kr.home), "--batch", "--yes", "--trust-model",
                                "always", "--compress-algo", "zlib", "-z", "9", "-e", "-r", site.keys.fingerprint,
                                "-o", str(out)], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        gpg.stdin.write(header + b"\r\n")
        block = (row + b"\r\n") * ((1 << 20) // len(row))
        for _ in range(plaintext // len(block)):
            gpg.stdin.write(block)
        gpg.stdin.close()
        assert gpg.wait() == 0
    return out


def _feed_with(site, feed_id: str, **settings):
    """``site.feed`` plus feed settings (appended to the feeds file it wrote: the feed is its last item)."""
    from im1.config import load_config

    site.feed(feed_id, [ODS])
    path = Path(os.environ["IM1_FEEDS_FILE"])
    path.write_text(path.read_text() + "".join(f"    {k}: {v}\n" for k, v in settings.items()))
    return load_config(path).feed(feed_id)


def test_a_compression_bomb_is_quarantined_and_gpg_stopped(site, loader):
    world = site.world([ODS])
    folder = site.publish(world, 0)
    bomb = _bomb(site, folder, "Admin_Patient", 32 << 20)
    assert bomb.stat().st_size < 200_000  # 32 MiB of plaintext
    replace_table(folder, "Admin_Patient", bomb)
    # the limit: 10 x the encrypted size, but at least 1 MiB (well below the bomb's 32 MiB)
    feed = _feed_with(site, "emis_bomb", max_plaintext_ratio=10, min_plaintext_limit_mb=1)
    limit = feed.plaintext_limit(bomb.stat().st_size)
    assert limit < 2 << 20
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError)
    [(org, key, status, rows, late, reason)] = batches(loader, feed.id)
    assert status == "quarantined"
    assert f"expands beyond {limit} bytes" in reason and "Admin_Patient" in reason, reason
    assert raw_count(loader, "admin_patient", feed.id) == 0
    assert _gpg_children() == []  # stopped at the limit and reaped
    # the next good batch still loads
    site.publish(world, 1)
    [ok] = run_core(site, feed)
    assert ok.status == "loaded" and raw_count(loader, "admin_patient", feed.id) > 0


def test_a_bad_row_stops_gpg_with_the_copy(site, loader):
    world = site.world([ODS])
    folder = site.publish(world, 0)
    faults.malform_row(folder, "Admin_Patient", site.keys, row=2)
    feed = site.feed("emis_bad_row_gpg", [ODS])
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError) and "unterminated CSV quoted field" in str(err)
    assert _gpg_children() == []


def test_a_wrong_passphrase_fails_the_load_for_retry_and_quarantines_nothing(site, loader):
    """The passphrase protects OUR key: a wrong one is our configuration's fault. The load fails (the
    task is retried and alerts); the delivery is not quarantined, and loads once the passphrase is fixed."""
    world = site.world([ODS])
    site.publish(world, 0)
    feed = site.feed("emis_bad_passphrase", [ODS])
    wrong = PgpKey(site.keys.secret_armored, "not-the-passphrase")
    pipe = Pipeline(feed, site.loader_url, key=wrong)
    with SftpClient(site.sftp_settings()) as c, pytest.raises(BadPassphraseError, match="bad passphrase"):
        pipe.run_once(c)
    [(org, key, status, rows, late, error)] = batches(loader, feed.id)
    assert status == "failed" and "feed's PGP connection" in error
    assert any("will be retried" in e for e in events(loader, feed.id))
    [ok] = run_core(site, feed)  # the right passphrase
    assert ok.status == "loaded"


WIDE = b"".join(b',"Extra%04d"' % i for i in range(1, 1601))
LONG = "SupplierSpecificColumnWhoseNameIsLongerThanPostgreSQLAllowsForAnIdentifier"


@pytest.mark.parametrize(
    ("name", "edit", "words"),
    [
        ("wide", lambda h: h + WIDE, "PostgreSQL allows at most 1600 columns"),
        ("long", lambda h: h + f',"{LONG}_A","{LONG}_B"'.encode(), "the same in their first 63 bytes"),
        ("comma", lambda h: h + b",", "has no name"),
        ("system", lambda h: h + b',"xmin"', "PostgreSQL's system columns"),
    ],
    ids=["too_many_columns", "truncated_names_clash", "trailing_comma", "system_column"],
)
def test_a_header_no_retry_can_load_is_quarantined_at_once(site, loader, name, edit, words):
    world = site.world([ODS])
    folder = site.publish(world, 0)
    faults.edit_header(folder, "Admin_Patient", site.keys, edit, what=words)
    feed = site.feed(f"emis_header_{name}", [ODS])
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError)
    [(org, key, status, rows, late, reason)] = batches(loader, feed.id)
    assert status == "quarantined" and words in reason and "Admin_Patient" in reason, reason
    assert "column" in reason and "Extra0001" not in reason and LONG not in reason  # positions, not contents
    assert raw_count(loader, "admin_patient", feed.id) == 0
    # the next good batch still loads
    site.publish(world, 1)
    [ok] = run_core(site, feed)
    assert ok.status == "loaded" and raw_count(loader, "admin_patient", feed.id) > 0


def test_a_file_without_its_header_row_is_quarantined_without_showing_the_line(site, loader):
    # the first line is then a patient's record: its values must not become column names or be shown
    world = site.world([ODS])
    folder = site.publish(world, 0)
    fault = faults.drop_header(folder, "Admin_Patient", site.keys)
    first = [v for v in fault.extra["first_line"] if len(v) > 3]  # a GUID, a date of birth, ...
    feed = site.feed("emis_headless", [ODS])
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError)
    [(org, key, status, rows, late, reason)] = batches(loader, feed.id)
    assert status == "quarantined" and ("header row is missing" in reason or "missing from the header" in reason), reason
    shown = reason + " ".join(events(loader, feed.id))
    assert first and not [v for v in first if v in shown]
    columns = {r[0] for r in loader.execute(
        "select column_name from information_schema.columns where table_name = 'admin_patient'")}
    assert not [v for v in first if v.lower() in columns]


def test_a_row_postgresql_refuses_is_named_by_its_line_and_never_quoted(site, loader):
    # PostgreSQL's error quotes the whole row in its CONTEXT: neither the ledger, the events nor the
    # raised error's chain (which a task log prints as a traceback) may carry it
    world = site.world([ODS])
    folder = site.publish(world, 0)
    fault = faults.extra_field(folder, "Admin_Patient", site.keys, row=2)
    values = [v for v in fault.extra["row_fields"] if len(v) > 3]
    feed = site.feed("emis_row_refused", [ODS])
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError) and "line 3" in str(err)
    chain, e = [], err
    while e is not None:
        chain.append(f"{e!r} {e}")
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)  # what a traceback prints
    [(org, key, status, rows, late, reason)] = batches(loader, feed.id)
    shown = " ".join([reason, *events(loader, feed.id), *chain])
    leaked = {v: shown[max(0, shown.index(v) - 150):shown.index(v) + 60] for v in values if v in shown}
    assert status == "quarantined" and values and not leaked, leaked


def test_a_new_column_with_a_name_longer_than_postgresql_keeps_loads(site, loader):
    # schema drift with a long name: kept under the 63-byte name PostgreSQL keeps, loaded, not quarantined
    world = site.world([ODS])
    folder = site.publish(world, 0)
    faults.add_unknown_column(folder, "Admin_Patient", site.keys, column=LONG)
    feed = site.feed("emis_long_new_column", [ODS])
    [ok] = run_core(site, feed)
    assert ok.status == "loaded"
    kept = LONG.lower().encode()[:63].decode()
    query = sql.SQL("select count(*) from raw_emis.admin_patient where {} = 'x'").format(sql.Identifier(kept))
    assert loader.execute(query).fetchone()[0] > 0
