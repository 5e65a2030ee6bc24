"""One bad batch never blocks the feed: a SystmOne batch folder whose manifest cannot be read (too
large) or parsed, or names a file that is not there, is held alone; the feed's other batches are
still discovered and loaded.

Real parts: the synthetic supplier's batch folders in a gateway folder or on the SFTP server, the
real warehouse, :meth:`Pipeline.run_once` and :meth:`Pipeline.discover`.
"""

from __future__ import annotations

import pytest

from im1 import tpp
from im1.ingest.adapters import MANIFEST_LIMIT
from im1.ingest.errors import QuarantineError
from im1.ingest.pipeline import Pipeline
from im1.transport.folder import FolderClient
from tests.ingest.conftest import run_tpp, tpp_count
from tests.ingest.test_tpp_ingest import file_rows


def _status(conn, feed_id: str) -> dict[str, tuple[str, str | None]]:
    return {k: (s, e) for k, s, e in conn.execute(
        "select batch_key, status, error from ingest.batches where feed_id = %s", (feed_id,)).fetchall()}


def _three_days(gateway, ods: str):
    world = gateway.world(ods)
    return [gateway.publish(world, day) for day in range(3)]


@pytest.mark.parametrize("transport", ["folder", "sftp"])
def test_an_oversized_manifest_quarantines_its_batch_alone(gateway, loader, transport, sftp_server, sftp_settings):
    from im1.transport.sftp import SftpClient

    ods = "Z93141"
    if transport == "sftp":
        gateway.root = sftp_server.root / "tpp" / "oversized"
        gateway.root.mkdir(parents=True)
    day0, day1, day2 = _three_days(gateway, ods)
    with open(day1 / tpp.MANIFEST, "ab") as fh:  # blank lines: a manifest, only far too large
        fh.write(b"\r\n" * (MANIFEST_LIMIT // 2 + 1))
    size = (day1 / tpp.MANIFEST).stat().st_size
    feed = gateway.feed(f"tpp_oversized_{transport}", ods, transport=None if transport == "folder" else (
        "{kind: sftp, host: 127.0.0.1, port: " + str(sftp_server.port) + ", path: /tpp/oversized, conn_id: t_ov}"))
    client = SftpClient(sftp_settings) if transport == "sftp" else None
    results = run_tpp(gateway.loader_url, feed, client)
    assert [type(r).__name__ for r in results] == ["LoadResult", "QuarantineError", "LoadResult"], results
    assert isinstance(results[1], QuarantineError) and f"{size} bytes" in str(results[1])
    status = _status(loader, feed.id)
    assert status[day0.name][0] == status[day2.name][0] == "loaded"
    state, reason = status[day1.name]
    assert state == "quarantined"
    assert f"{tpp.MANIFEST} is {size} bytes, more than the {MANIFEST_LIMIT}" in reason and "release" in reason
    assert tpp_count(loader, "srpatient", feed.id) == sum(
        file_rows(f / "SRPatient.csv") for f in (day0, day2) if (f / "SRPatient.csv").exists())
    # the held batch waits for a release; the feed goes on
    assert run_tpp(gateway.loader_url, feed, SftpClient(sftp_settings) if transport == "sftp" else None) == []


def test_an_unparseable_manifest_or_a_listed_file_missing_holds_only_that_batch(gateway, loader):
    ods = "Z93142"
    day0, day1, day2 = _three_days(gateway, ods)
    (day0 / tpp.MANIFEST).write_bytes(b'"FileName","IsDelta"\r\n"SRPatient","Y"\r\n')  # not a manifest
    listed = tpp.parse_manifest((day1 / tpp.MANIFEST).read_bytes()).tables
    gone = next(t for t in listed if (day1 / f"{t}.csv").exists() and t != "SRAppointmentAttendees")
    (day1 / f"{gone}.csv").unlink()
    feed = gateway.feed("tpp_bad_batches", ods)
    with FolderClient() as c:
        found = Pipeline(feed, gateway.loader_url).discover(c)
    assert [b.batch_key for b in found.ready] == [day0.name, day2.name]  # day 0 is held when fetched
    assert [(b.batch_key, b.missing) for b in found.incomplete] == [(day1.name, [f"{gone}.csv"])]
    results = run_tpp(gateway.loader_url, feed)
    assert [type(r).__name__ for r in results] == ["QuarantineError", "LoadResult"], results
    status = _status(loader, feed.id)
    assert status[day0.name][0] == "quarantined" and "DateExtractTo missing from the header" in status[day0.name][1]
    assert status[day2.name][0] == "loaded" and day1.name not in status  # still waiting for its file
