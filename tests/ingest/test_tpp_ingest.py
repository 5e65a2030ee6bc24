"""TPP SystmOne ingest against the real warehouse and the synthetic supplier's real batch folders:
exactly once (bulk, deltas, a re-bulk), idempotent re-runs, Windows-1252 names intact, bad
deliveries quarantined with the reason, schema drift kept, late batches flagged, re-deliveries
recognised, an SFTP gateway, and the GX checks per raw batch."""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

from im1 import tpp
from im1.ingest.errors import QuarantineError
from im1.ingest.pipeline import Pipeline, sha256_of
from tests.ingest.conftest import events, run_tpp, tpp_count

RAW_TABLES = ("srpatient", "srpatientregistration", "srcode", "srevent", "srproblem", "srappointment", "srrota",
              "srrepeattemplate", "srprimarycaremedication", "srstaffmember", "srstaffmemberprofile",
              "srorganisation", "srmapping")


def file_rows(path: Path) -> int:
    """Data rows in a delivered TPP file (a strict RFC 4180 read, Windows-1252)."""
    with open(path, newline="", encoding="cp1252") as fh:
        return sum(1 for _ in csv.reader(fh, strict=True)) - 1


def ledger_files(conn, feed_id: str) -> list[dict]:
    cur = conn.execute(
        """select b.batch_key, f.file_id, f.file_name, f.table_name, f.status, f.is_delta, f.rows_in_file,
                  f.rows_loaded, f.sha256, f.bytes, f.unknown_columns, f.archive_path, f.error
             from ingest.files f join ingest.batches b using (batch_id)
            where b.feed_id = %s order by b.extract_ts, f.file_name""", (feed_id,))
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def tpp_batches(conn, feed_id: str) -> list[tuple]:
    return conn.execute(
        "select batch_key, status, is_late, rows_loaded, error from ingest.batches where feed_id = %s "
        "order by extract_ts, batch_key", (feed_id,)).fetchall()


def test_bulk_deltas_and_a_rebulk_load_exactly_once_and_a_rerun_loads_nothing(gateway, loader):
    ods = "Z93101"
    world = gateway.world(ods)
    feed = gateway.feed("tpp_exactly_once", ods)
    folders = []
    for day in range(4):  # bulk, delta, re-bulk of SRCode, delta overlapping the re-bulk
        folders.append(gateway.publish(world, day, rebulk_day=2))
        results = run_tpp(gateway.loader_url, feed, quality=True)
        assert [r.status for r in results] == ["loaded"], results
    assert [b[:3] for b in tpp_batches(loader, feed.id)] == [(f.name, "loaded", False) for f in folders]
    files = ledger_files(loader, feed.id)
    # every file of every folder is in the ledger, with its checksum and size
    delivered = {(f.name, p.name): p for f in folders for p in f.iterdir()}
    assert {(r["batch_key"], r["file_name"]) for r in files} == set(delivered)
    for r in files:
        p = delivered[(r["batch_key"], r["file_name"])]
        assert r["bytes"] == p.stat().st_size and r["sha256"] == sha256_of(p)
        assert Path(r["archive_path"]).read_bytes() == p.read_bytes()
        if r["status"] == "loaded":
            # rows in raw == rows in the file, per file (and so per table)
            assert r["rows_in_file"] == r["rows_loaded"] == file_rows(p)
            assert tpp_count(loader, r["table_name"].lower(), feed.id, _file_id=r["file_id"]) == file_rows(p), r
    for t in RAW_TABLES:
        in_files = sum(file_rows(p) for (_, name), p in delivered.items() if name.lower() == f"{t}.csv")
        assert tpp_count(loader, t, feed.id) == in_files, t
    # the manifest's IsDelta per file: the bulk is full, deltas are deltas, the re-bulk's SRCode is full
    by = {(r["batch_key"], r["table_name"]): r for r in files}
    assert all(r["is_delta"] is False for (k, t), r in by.items() if k == folders[0].name and r["status"] == "loaded"
               and t != "SRMapping")
    assert by[(folders[3].name, "SRCode")]["is_delta"] is True
    assert by[(folders[2].name, "SRCode")]["is_delta"] is False
    assert by[(folders[2].name, "SRPatient")]["is_delta"] is True
    assert by[(folders[0].name, "SRMapping")]["is_delta"] is None  # not listed in the manifest
    # what the manifest lists but cannot be loaded is archived and recorded, not dropped
    att = by[(folders[0].name, "SRAppointmentAttendees")]
    assert att["status"] == "not_loaded" and "no column list" in att["error"]
    assert by[(folders[0].name, "SRManifest")]["status"] == "not_loaded"
    # the overlap after the re-bulk is reported, not refused
    assert any("overlaps the previous extract" in e for e in events(loader, feed.id))
    # GX checked every batch
    assert loader.execute("select count(*) from ingest.batches where feed_id = %s and quality_status = 'passed'",
                          (feed.id,)).fetchone()[0] == 4

    counts = {t: tpp_count(loader, t, feed.id) for t in RAW_TABLES}
    assert run_tpp(gateway.loader_url, feed) == []  # nothing new: nothing fetched, nothing loaded
    assert {t: tpp_count(loader, t, feed.id) for t in RAW_TABLES} == counts


def test_windows_1252_names_arrive_intact_as_utf8(gateway, loader):
    ods = "Z93102"
    world = gateway.world(ods, patients=120)
    folder = gateway.publish(world, 0)
    raw = (folder / "SRPatient.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # it really is Windows-1252
    feed = gateway.feed("tpp_cp1252", ods)
    assert run_tpp(gateway.loader_url, feed)[0].status == "loaded"
    def cp1252(name: str) -> str:  # what a SystmOne extract can carry (Windows-1252 has no 'Ł')
        return name.encode("cp1252", errors="replace").decode("cp1252")

    accented = [p for p in world.patients if p.reg_date <= world.start
                and not cp1252(p.given + p.middle + p.surname).replace("?", "").isascii()]
    assert len(accented) >= 3, "the synthetic population should have names beyond ASCII"
    for p in accented:
        got = loader.execute("select firstname, middlenames, surname from raw_tpp.srpatient "
                             "where _feed_id = %s and rowidentifier = %s", (feed.id, str(p.key))).fetchone()
        assert got == (cp1252(p.given), cp1252(p.middle), cp1252(p.surname))


def _rewrite(path: Path, edit) -> None:
    data = path.read_bytes()
    path.write_bytes(edit(data))


def _break_row(data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    lines[2] = lines[2][:-1]  # the second data row loses its closing quote
    return b"\r\n".join(lines)


def _stray_quote(data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    lines[3] = lines[3].replace(b'","', b'",x"', 1)  # a quote inside an unquoted field
    return b"\r\n".join(lines)


def _undefined_byte(data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    lines[4] = lines[4].replace(b'"', b'"\x81', 1)  # 0x81 is not a Windows-1252 character
    return b"\r\n".join(lines)


@pytest.mark.parametrize(("edit", "why"), [
    (_break_row, "not valid CSV for PostgreSQL COPY"),
    (_stray_quote, "line 4 is not valid RFC 4180 CSV"),
    (_undefined_byte, "byte 0x81 at offset"),
])
def test_a_malformed_file_quarantines_the_batch_with_the_reason_and_loads_nothing(gateway, loader, edit, why):
    ods = "Z93103"
    world = gateway.world(ods)
    folder = gateway.publish(world, 0)
    _rewrite(folder / "SRCode.csv", edit)
    feed = gateway.feed(f"tpp_malformed_{edit.__name__.strip('_')}", ods)
    [err] = run_tpp(gateway.loader_url, feed)
    assert isinstance(err, QuarantineError)
    assert "SRCode.csv" in str(err) and why in str(err), str(err)
    [(key, status, late, rows, error)] = tpp_batches(loader, feed.id)
    assert status == "quarantined" and "SRCode.csv" in error and why in error
    for t in RAW_TABLES:  # all or nothing: not even the files before SRCode stayed
        assert tpp_count(loader, t, feed.id) == 0, t
    # a re-run leaves it quarantined (until released) and loads nothing
    assert run_tpp(gateway.loader_url, feed) == []
    assert tpp_batches(loader, feed.id)[0][1] == "quarantined"


def test_a_missing_required_column_quarantines_until_released(gateway, loader):
    ods = "Z93104"
    world = gateway.world(ods)
    folder = gateway.publish(world, 0)

    def drop_row_identifier(data: bytes) -> bytes:
        out = []
        for line in data.split(b"\r\n"):
            out.append(line.split(b",", 1)[1] if line else line)
        return b"\r\n".join(out)

    _rewrite(folder / "SRProblem.csv", drop_row_identifier)
    feed = gateway.feed("tpp_missing_column", ods)
    [err] = run_tpp(gateway.loader_url, feed)
    assert isinstance(err, QuarantineError)
    assert "SRProblem.csv: required column(s) missing from the header: RowIdentifier" in str(err)
    assert tpp_batches(loader, feed.id)[0][1] == "quarantined"
    assert tpp_count(loader, "srpatient", feed.id) == 0
    # the supplier re-sends the folder; an operator releases the batch; the next run loads it, once
    shutil.rmtree(folder)
    gateway.publish(world, 0)
    from im1.ingest import status

    batch_id = loader.execute("select batch_id from ingest.batches where feed_id = %s", (feed.id,)).fetchone()[0]
    assert "released" in status.release(loader, batch_id, "SRProblem re-sent")
    [res] = run_tpp(gateway.loader_url, feed)
    assert res.status == "loaded"
    assert tpp_count(loader, "srproblem", feed.id) == file_rows(folder / "SRProblem.csv") > 0
    assert tpp_batches(loader, feed.id)[0][1:3] == ("loaded", False)
    assert any("SRProblem.csv: re-fetched with a new checksum" in e for e in events(loader, feed.id))
    assert run_tpp(gateway.loader_url, feed) == []


def test_an_unknown_column_is_kept_and_reported(gateway, loader):
    ods = "Z93105"
    world = gateway.world(ods)
    folder = gateway.publish(world, 0)

    def add_column(data: bytes) -> bytes:
        lines = data.split(b"\r\n")
        return b"\r\n".join([lines[0] + b',"SupplierNewColumn"']
                            + [ln + b',"new \xe9"' if ln else ln for ln in lines[1:]])

    _rewrite(folder / "SRPatient.csv", add_column)
    feed = gateway.feed("tpp_unknown_column", ods)
    assert run_tpp(gateway.loader_url, feed, quality=True)[0].status == "loaded"
    n = file_rows(folder / "SRPatient.csv")
    assert tpp_count(loader, "srpatient", feed.id, suppliernewcolumn="new é") == n > 0
    [f] = [r for r in ledger_files(loader, feed.id) if r["file_name"] == "SRPatient.csv"]
    assert f["unknown_columns"] == ["SupplierNewColumn"]
    assert any("SRPatient.csv: column(s) not in the TPP specification, kept: SupplierNewColumn" in e
               for e in events(loader, feed.id))


def test_an_older_batch_arriving_late_is_loaded_and_flagged(gateway, loader):
    ods = "Z93106"
    world = gateway.world(ods)
    feed = gateway.feed("tpp_late", ods)
    day0, day2 = gateway.publish(world, 0), gateway.publish(world, 2)
    assert [r.late for r in run_tpp(gateway.loader_url, feed)] == [False, False]
    day1 = gateway.publish(world, 1)  # the supplier sends the missing day afterwards
    [res] = run_tpp(gateway.loader_url, feed)
    assert res.status == "loaded" and res.late is True
    assert [(k, s, late) for k, s, late, _, _ in tpp_batches(loader, feed.id)] == [
        (day0.name, "loaded", False), (day1.name, "loaded", True), (day2.name, "loaded", False)]
    assert any(f"{day1.name}: loaded late" in e for e in events(loader, feed.id))
    # between day 0 and day 2 there was a gap until day 1 arrived; the warning said so
    assert any(f"{day2.name}: gap in the extracts" in e for e in events(loader, feed.id))


def test_a_folder_without_its_manifest_or_with_a_missing_file_is_incomplete(gateway, loader):
    ods = "Z93107"
    world = gateway.world(ods)
    feed = gateway.feed("tpp_incomplete", ods)
    folder = gateway.publish(world, 0)
    manifest = (folder / tpp.MANIFEST).read_bytes()
    (folder / tpp.MANIFEST).unlink()
    from im1.transport.folder import FolderClient

    with FolderClient() as c:
        found = Pipeline(feed, gateway.loader_url).discover(c)
    assert found.ready == [] and [b.missing for b in found.incomplete] == [[tpp.MANIFEST]]
    (folder / tpp.MANIFEST).write_bytes(manifest)
    (folder / "SRRota.csv").unlink()
    with FolderClient() as c:
        found = Pipeline(feed, gateway.loader_url).discover(c)
    [inc] = found.incomplete
    assert found.ready == [] and inc.missing == ["SRRota.csv"]
    alert = Pipeline(feed, gateway.loader_url).quarantine_incomplete(found.incomplete, waited="6.0 h")
    assert f"batch(es) still incomplete after 6.0 h: {folder.name}: missing SRRota.csv" in alert
    [(key, status, _, _, error)] = tpp_batches(loader, feed.id)
    assert status == "quarantined" and "SRRota.csv named in SRManifest.csv still missing after 6.0 h" in error
    assert run_tpp(gateway.loader_url, feed) == []  # quarantined: waits for a release


def test_a_redelivered_extract_is_recognised_and_not_loaded_twice(gateway, loader):
    ods = "Z93108"
    world = gateway.world(ods)
    feed = gateway.feed("tpp_redelivery", ods)
    folder = gateway.publish(world, 0)
    assert run_tpp(gateway.loader_url, feed)[0].status == "loaded"
    patients = tpp_count(loader, "srpatient", feed.id)
    # the same folder re-sent (same name): nothing to do
    shutil.rmtree(folder)
    gateway.publish(world, 0)
    assert run_tpp(gateway.loader_url, feed) == []
    # the same extract again under another folder name: quarantined as a duplicate, not loaded
    copy = folder.with_name(folder.name[:-4] + "0420")
    shutil.copytree(folder, copy)
    [err] = run_tpp(gateway.loader_url, feed)
    assert isinstance(err, QuarantineError) and "duplicate delivery" in str(err)
    assert folder.name in str(err)
    assert tpp_count(loader, "srpatient", feed.id) == patients
    assert [(k, s) for k, s, *_ in tpp_batches(loader, feed.id)] == [(folder.name, "loaded"), (copy.name, "quarantined")]
    # an operator who wants it anyway releases it: loaded (staging keeps one current row per record)
    from im1.ingest import status

    dup = loader.execute("select batch_id from ingest.batches where feed_id = %s and batch_key = %s",
                         (feed.id, copy.name)).fetchone()[0]
    status.release(loader, dup, "load the re-sent copy too")
    [res] = run_tpp(gateway.loader_url, feed)
    assert res.status == "loaded" and tpp_count(loader, "srpatient", feed.id) == 2 * patients


def test_an_untrustworthy_manifest_quarantines_after_archiving(gateway, loader):
    ods = "Z93109"
    folder = gateway.publish(gateway.world(ods), 0)
    text = (folder / tpp.MANIFEST).read_text("cp1252").replace('"SRCode","N"', '"SRCode","maybe"')
    (folder / tpp.MANIFEST).write_text(text, "cp1252")
    feed = gateway.feed("tpp_bad_manifest", ods)
    [err] = run_tpp(gateway.loader_url, feed)
    assert isinstance(err, QuarantineError)
    assert "IsDelta of SRCode is 'maybe', expected Y or N" in str(err)
    assert tpp_count(loader, "srpatient", feed.id) == 0
    files = ledger_files(loader, feed.id)
    assert {r["file_name"] for r in files} == {p.name for p in folder.iterdir()}  # archived all the same


def test_a_delivery_for_another_practice_fails_its_quality_check(gateway, loader):
    world = gateway.world("Z93110")
    gateway.publish(world, 0)
    feed = gateway.feed("tpp_misrouted", "Z93111")  # the gateway holds another practice's extract
    results = run_tpp(gateway.loader_url, feed, quality=True)
    assert results[0].status == "loaded"
    text = str(results[1])
    assert "SRPatient.idorganisationvisibleto" in text and "not Z93111" in text
    [(key, status, _, _, error)] = tpp_batches(loader, feed.id)
    assert status == "quarantined" and error.startswith("quality check failed (rows removed from raw)")
    assert tpp_count(loader, "srpatient", feed.id) == 0


def test_an_sftp_gateway_is_fetched_with_the_pinned_host_key(gateway, loader, sftp_server, sftp_settings,
                                                            monkeypatch):
    from im1.transport.sftp import SftpClient

    ods = "Z93112"
    world = gateway.world(ods)
    gateway.root = sftp_server.root / "tpp" / "reporting-group-1"
    gateway.root.mkdir(parents=True)
    gateway.publish(world, 0)
    gateway.publish(world, 1)
    feed = gateway.feed("tpp_sftp", ods, transport=(
        "{kind: sftp, host: 127.0.0.1, port: " + str(sftp_server.port)
        + ", path: /tpp/reporting-group-1, conn_id: t_tpp_sftp}"))
    results = run_tpp(gateway.loader_url, feed, SftpClient(sftp_settings))
    assert [r.status for r in results] == ["loaded", "loaded"]
    assert tpp_count(loader, "srpatient", feed.id) == sum(
        file_rows(p) for p in gateway.root.glob("*/SRPatient.csv")) > 0


def test_manifest_parsing_is_strict():
    ok = tpp.parse_manifest(
        b'"FileName","IsDelta","IsReference","DateExtractFrom","DateExtractTo"\r\n'
        b'"SRCode","Y","N","20261102_0000","20261103_0000"\r\n"SRAppointmentAttendees","Y","N","",""\r\n')
    assert ok.tables == ["SRCode", "SRAppointmentAttendees"]
    assert ok.extract_to == dt.datetime(2026, 11, 3) and ok.extract_from == dt.datetime(2026, 11, 2)
    head = b'"FileName","IsDelta","IsReference","DateExtractFrom","DateExtractTo"\r\n'
    for body, why in [
        (b'"SRCode","Y","N","","20261103_0000"\r\n"SRPatient","Y","N","","20261104_0000"\r\n', "disagree"),
        (b'"SRCode","Y","N","","2026-11-03"\r\n', "expected yyyyMMdd_HHmm"),
        (b'"SRCode","Y","N","","20261103_0000"\r\n"SRCode","N","N","","20261103_0000"\r\n', "listed twice"),
        (b'"SRCode","Y","N",""\r\n', "4 field(s)"),
    ]:
        with pytest.raises(tpp.ManifestError, match=re.escape(why)):
            tpp.parse_manifest(head + body)
    with pytest.raises(tpp.ManifestError, match="DateExtractTo missing from the header"):
        tpp.parse_manifest(b'"FileName","IsDelta","IsReference","DateExtractFrom"\r\n')
