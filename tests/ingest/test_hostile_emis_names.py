"""Issue 13, EMIS over SFTP: a supplier file name of 251-255 bytes (its ``.part`` would exceed
NAME_MAX) is archived under a bounded local name and loads; it blocks nothing beside it."""

from __future__ import annotations

import os
from pathlib import Path

from im1 import paths
from tests.ingest.conftest import START, raw_count, run_core

ODS = "Z91301"


def _with_export_type(files: list[Path], export_type: str) -> list[Path]:
    """Rename a published batch's files to another export type (the synthetic supplier writes
    ``<name>.uploading`` first, so it cannot write names this long itself)."""
    out = []
    for p in files:
        out.append(p.rename(p.with_name(export_type + p.name[len("bulk"):])))
    return out


def test_file_names_of_up_to_255_bytes_are_archived_under_bounded_names_and_load(site, loader):
    world = site.world([ODS])
    normal = sorted(site.publish(world, 0).iterdir())
    # the longest table name makes the longest file name 255 bytes; the second batch holds other
    # patients (the same content again would be held as a re-send)
    longest = max(len(os.fsencode(p.name)) for p in normal)
    other = site.world([ODS], seed=8)
    long = _with_export_type(sorted(site.publish(other, 1).iterdir()), "bulk" + "x" * (255 - longest))
    assert max(len(os.fsencode(p.name)) for p in long) == 255
    feed = site.feed("emis_long_names", [ODS])
    results = run_core(site, feed)
    assert [r.status for r in results] == ["loaded", "loaded"], results
    rows = loader.execute("select f.file_name, f.archive_path from ingest.files f join ingest.batches b "
                          "using (batch_id) where b.feed_id = %s", (feed.id,)).fetchall()
    assert len(rows) == 42
    for name, archived in rows:
        local = Path(archived).name
        assert len(os.fsencode(local + ".part")) <= paths.NAME_MAX and local.endswith(".csv.gpg")
        src = next(p for p in normal + long if p.name == name)
        assert Path(archived).read_bytes() == src.read_bytes()
    registered = [sum(1 for p in w.patients if p.reg_date <= on) for w, on in ((world, START), (other, START))]
    assert raw_count(loader, "admin_patient", feed.id) == sum(registered)
