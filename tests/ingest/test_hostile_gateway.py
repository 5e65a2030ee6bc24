"""Issue 13, hostile SystmOne deliveries: names and folders chosen by whoever writes into the
gateway never mix two batches, never break the fetch of the batches beside them, and never make
the platform read a file from outside the gateway (a symbolic link) or hang on one (a FIFO).

Real parts throughout: the gateway folder on disk, the real warehouse and ledger."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from im1 import tpp
from im1.ingest.errors import QuarantineError
from im1.ingest.pipeline import Pipeline
from im1.transport.folder import FolderClient
from tests.ingest.conftest import run_tpp, tpp_count
from tests.ingest.test_tpp_ingest import RAW_TABLES, file_rows, ledger_files, tpp_batches

NAME_MAX = 255


def _assert_archived_as_delivered(loader, feed_id: str, sources: dict[str, Path]) -> None:
    """Every ledger file's archive holds its own batch's original, and its rows in raw are its own."""
    for r in ledger_files(loader, feed_id):
        src = sources[r["batch_key"]] / r["file_name"]
        assert Path(r["archive_path"]).read_bytes() == src.read_bytes(), (r["batch_key"], r["file_name"])
        if r["status"] == "loaded":
            assert r["rows_loaded"] == file_rows(src), (r["batch_key"], r["file_name"])
            assert tpp_count(loader, r["table_name"].lower(), feed_id, _file_id=r["file_id"]) == file_rows(src)


def _list_in_manifest(folder: Path, table: str) -> None:
    """Add a row for ``table`` (no dates) to the batch's SRManifest.csv."""
    m = folder / tpp.MANIFEST
    m.write_bytes(m.read_bytes() + f'"{table}","N","N","",""\r\n'.encode("cp1252"))


def test_a_nested_folder_and_a_folder_named_with_the_separator_load_as_themselves(gateway, loader):
    """``a/<ts>`` (a folder in a folder) and ``a__<ts>`` (one folder whose name holds ``__``) used to
    share one archive folder: the second fetch overwrote the first's originals, and the first batch
    was loaded with the second's rows."""
    ods = "Z93201"
    world = gateway.world(ods)
    bulk, delta = gateway.publish(world, 0), gateway.publish(world, 1)
    nested = gateway.root / "a" / bulk.name
    nested.parent.mkdir()
    bulk.rename(nested)
    flat = gateway.root / f"a__{bulk.name}"
    delta.rename(flat)
    feed = gateway.feed("tpp_separator", ods)
    results = run_tpp(gateway.loader_url, feed)
    assert [r.status for r in results] == ["loaded", "loaded"], results
    sources = {f"a/{bulk.name}": nested, f"a__{bulk.name}": flat}
    assert {k for k, *_ in tpp_batches(loader, feed.id)} == set(sources)
    archives = {r["batch_key"]: Path(r["archive_path"]).parent for r in ledger_files(loader, feed.id)}
    assert len(set(archives.values())) == 2, archives
    _assert_archived_as_delivered(loader, feed.id, sources)


def test_a_file_name_of_255_bytes_is_archived_under_a_bounded_name_and_blocks_nothing(gateway, loader):
    """``<name>.part`` of a 251-255 byte name exceeds NAME_MAX: every fetch used to fail, the good
    batch beside it included."""
    ods = "Z93202"
    world = gateway.world(ods)
    first, second = gateway.publish(world, 0), gateway.publish(world, 1)
    long_table = "SR" + "Q" * (NAME_MAX - len("SR.csv"))
    (first / f"{long_table}.csv").write_bytes(b'"RowIdentifier"\r\n"1"\r\n')
    _list_in_manifest(first, long_table)
    feed = gateway.feed("tpp_long_name", ods)
    results = run_tpp(gateway.loader_url, feed)
    assert [r.status for r in results] == ["loaded", "loaded"], results
    [long] = [r for r in ledger_files(loader, feed.id) if r["file_name"] == f"{long_table}.csv"]
    assert long["status"] == "not_loaded" and "not in the TPP specification" in long["error"]
    local = Path(long["archive_path"]).name
    assert len(os.fsencode(local + ".part")) <= NAME_MAX
    assert local.startswith("SRQQQQ") and local.endswith(".csv")  # still readable
    _assert_archived_as_delivered(loader, feed.id, {first.name: first, second.name: second})


def test_a_deeply_nested_batch_folder_gets_a_bounded_key_and_archive_folder(gateway, loader):
    """The archive folder of a deep batch folder (its path joined with ``__``) exceeded NAME_MAX: its
    fetch failed, and with it every fetch of the run."""
    ods = "Z93203"
    world = gateway.world(ods)
    deep_batch, beside = gateway.publish(world, 0), gateway.publish(world, 1)
    deep = gateway.root.joinpath(*[f"reporting-level-{i:02d}" for i in range(16)]) / deep_batch.name
    deep.parent.mkdir(parents=True)
    deep_batch.rename(deep)
    feed = gateway.feed("tpp_deep", ods)
    results = run_tpp(gateway.loader_url, feed)
    assert [r.status for r in results] == ["loaded", "loaded"], results
    keys = [k for k, *_ in tpp_batches(loader, feed.id)]
    assert beside.name in keys
    [deep_key] = [k for k in keys if k != beside.name]
    assert deep_key.startswith("reporting-level-00/reporting-level-01/") and len(deep_key) <= 200
    for r in ledger_files(loader, feed.id):
        assert len(os.fsencode(Path(r["archive_path"]).parent.name)) <= NAME_MAX
    _assert_archived_as_delivered(loader, feed.id, {deep_key: deep, beside.name: beside})
    assert run_tpp(gateway.loader_url, feed) == []  # the bounded key is stable: nothing is fetched twice


def test_a_file_swapped_for_a_symlink_after_discovery_quarantines_its_batch_only(gateway, loader, tmp_path):
    """A symbolic link is never followed: the file it points to (outside the gateway) is neither
    archived nor loaded; the batch is quarantined with the reason and the batch beside it loads."""
    ods = "Z93204"
    world = gateway.world(ods)
    swapped, good = gateway.publish(world, 0), gateway.publish(world, 1)
    feed = gateway.feed("tpp_symlink_swap", ods)
    pipe = Pipeline(feed, gateway.loader_url)
    with FolderClient() as c:
        plans = pipe.discover(c).ready
    assert [p.batch_key for p in plans] == [swapped.name, good.name]
    outside = tmp_path / "outside" / "SRPatient.csv"  # the same bytes: only where it lies differs
    outside.parent.mkdir()
    shutil.copyfile(swapped / "SRPatient.csv", outside)
    (swapped / "SRPatient.csv").unlink()
    (swapped / "SRPatient.csv").symlink_to(outside)
    with FolderClient() as c:
        fetched = [pipe.fetch(c, p) for p in plans]
    assert "SRPatient.csv" in fetched[0].error and "symbolic link" in fetched[0].error
    with pytest.raises(QuarantineError, match="symbolic link"):
        pipe.load(ods, fetched[0])
    assert pipe.load(ods, fetched[1]).status == "loaded"
    status = {k: (s, e) for k, s, _, _, e in tpp_batches(loader, feed.id)}
    assert status[swapped.name][0] == "quarantined" and "SRPatient.csv" in status[swapped.name][1]
    assert status[good.name][0] == "loaded"
    archived = {r["file_name"] for r in ledger_files(loader, feed.id) if r["batch_key"] == swapped.name}
    assert "SRPatient.csv" not in archived
    assert not any(Path(r["archive_path"]).read_bytes() == outside.read_bytes()
                   for r in ledger_files(loader, feed.id) if r["batch_key"] == swapped.name)
    loaded_ids = [r["file_id"] for r in ledger_files(loader, feed.id) if r["batch_key"] == swapped.name]
    for t in RAW_TABLES:
        for fid in loaded_ids:
            assert tpp_count(loader, t, feed.id, _file_id=fid) == 0


def test_a_batch_folder_swapped_for_a_symlink_after_discovery_is_not_followed(gateway, loader, tmp_path):
    ods = "Z93205"
    world = gateway.world(ods)
    folder = gateway.publish(world, 0)
    feed = gateway.feed("tpp_folder_swap", ods)
    pipe = Pipeline(feed, gateway.loader_url)
    with FolderClient() as c:
        [plan] = pipe.discover(c).ready
    outside = tmp_path / "outside-batch"
    folder.rename(outside)
    folder.symlink_to(outside, target_is_directory=True)
    with FolderClient() as c:
        fetched = pipe.fetch(c, plan)
    assert fetched.error and "symbolic link" in fetched.error, fetched.error
    with pytest.raises(QuarantineError, match="symbolic link"):
        pipe.load(ods, fetched)
    assert tpp_batches(loader, feed.id)[0][1] == "quarantined"
    assert all(r["status"] != "loaded" for r in ledger_files(loader, feed.id))
    for t in RAW_TABLES:
        assert tpp_count(loader, t, feed.id) == 0, t


@pytest.mark.timeout(120)  # before the fix, fetch blocked for ever opening the FIFO
def test_a_file_swapped_for_a_fifo_after_discovery_is_refused_without_hanging(gateway, loader):
    ods = "Z93206"
    world = gateway.world(ods)
    folder = gateway.publish(world, 0)
    feed = gateway.feed("tpp_fifo_swap", ods)
    pipe = Pipeline(feed, gateway.loader_url)
    with FolderClient() as c:
        [plan] = pipe.discover(c).ready
    (folder / "SRCode.csv").unlink()
    os.mkfifo(folder / "SRCode.csv")
    with FolderClient() as c:
        fetched = pipe.fetch(c, plan)
    assert "SRCode.csv" in fetched.error and "FIFO" in fetched.error, fetched.error
    with pytest.raises(QuarantineError, match="FIFO"):
        pipe.load(ods, fetched)
    assert tpp_batches(loader, feed.id)[0][1] == "quarantined"


def test_a_special_file_in_a_batch_folder_quarantines_that_batch_with_the_reason(gateway, loader, tmp_path):
    """At discovery, a FIFO or a symbolic link where a file should be is refused at once, by name
    (it used to be invisible, so the batch waited as incomplete for a file that was there)."""
    ods = "Z93207"
    world = gateway.world(ods)
    fifo_batch, link_batch, good = (gateway.publish(world, d) for d in range(3))
    (fifo_batch / "SRCode.csv").unlink()
    os.mkfifo(fifo_batch / "SRCode.csv")
    outside = tmp_path / "SRRota.csv"
    shutil.copyfile(link_batch / "SRRota.csv", outside)
    (link_batch / "SRRota.csv").unlink()
    (link_batch / "SRRota.csv").symlink_to(outside)
    feed = gateway.feed("tpp_special_files", ods)
    results = run_tpp(gateway.loader_url, feed)
    assert len(results) == 3
    assert isinstance(results[0], QuarantineError) and "SRCode.csv" in str(results[0]) and "FIFO" in str(results[0])
    assert isinstance(results[1], QuarantineError) and "SRRota.csv" in str(results[1])
    assert "symbolic link" in str(results[1])
    assert results[2].status == "loaded"
    assert [s for _, s, *_ in tpp_batches(loader, feed.id)] == ["quarantined", "quarantined", "loaded"]
    assert tpp_count(loader, "srpatient", feed.id) == file_rows(good / "SRPatient.csv")


def test_a_symlinked_batch_folder_is_not_walked_into(gateway, loader, tmp_path):
    ods = "Z93208"
    world = gateway.world(ods)
    outside = gateway.publish(world, 0)
    moved = tmp_path / "elsewhere" / outside.name
    moved.parent.mkdir()
    outside.rename(moved)
    (gateway.root / outside.name).symlink_to(moved, target_is_directory=True)
    feed = gateway.feed("tpp_symlinked_folder", ods)
    with FolderClient() as c:
        found = Pipeline(feed, gateway.loader_url).discover(c)
    assert found.ready == [] and found.incomplete == []
    assert found.foreign_files == [(gateway.root / outside.name).as_posix()]
    assert run_tpp(gateway.loader_url, feed) == []


def test_a_gateway_file_name_ending_in_a_newline_is_not_a_delivery_file(gateway, loader):
    """Issue 13: ``SRPatient.csv\\n`` is not SRPatient.csv: beside the real file it is an extra file
    (not loaded); in place of a file (here SRRota.csv) the batch still misses it."""
    ods = "Z93209"
    world = gateway.world(ods)
    beside, instead = gateway.publish(world, 0), gateway.publish(world, 1)
    shutil.copyfile(beside / "SRPatient.csv", beside / "SRPatient.csv\n")
    (instead / "SRRota.csv").rename(instead / "SRRota.csv\n")
    feed = gateway.feed("tpp_newline_name", ods)
    with FolderClient() as c:
        found = Pipeline(feed, gateway.loader_url).discover(c)
    [ready] = found.ready
    assert ready.batch_key == beside.name and "SRPatient.csv\n" not in {f.name for f in ready.files}
    assert any("SRPatient.csv\n" in names for _, names in ready.notes)
    [inc] = found.incomplete
    assert inc.batch_key == instead.name and inc.missing == ["SRRota.csv"]
    [res] = run_tpp(gateway.loader_url, feed)
    assert res.status == "loaded"
    assert tpp_count(loader, "srpatient", feed.id) == file_rows(beside / "SRPatient.csv")


def test_names_that_are_not_utf8_never_block_the_feed(gateway, loader):
    """A file or a folder whose name is not valid UTF-8 cannot be recorded in the ledger (nor shown
    as it is): it is listed as such, never read; its batch is quarantined, the others load."""
    ods = "Z93210"
    world = gateway.world(ods)
    odd_file, odd_folder, good = (gateway.publish(world, d) for d in range(3))
    shutil.copyfile(odd_file / "SRRota.csv", os.fsdecode(os.fsencode(odd_file) + b"/SRRota\xff.csv"))
    nested = Path(os.fsdecode(os.fsencode(gateway.root) + b"/group\xe9")) / odd_folder.name
    nested.parent.mkdir()
    odd_folder.rename(nested)
    feed = gateway.feed("tpp_not_utf8", ods)
    results = run_tpp(gateway.loader_url, feed)
    assert len(results) == 2, results
    assert isinstance(results[0], QuarantineError) and "SRRota\\xff.csv" in str(results[0])
    assert "not valid UTF-8" in str(results[0])
    assert results[1].status == "loaded"
    assert [(k, s) for k, s, *_ in tpp_batches(loader, feed.id)] == [(odd_file.name, "quarantined"),
                                                                      (good.name, "loaded")]
    with FolderClient() as c:
        found = Pipeline(feed, gateway.loader_url).discover(c)
    assert found.foreign_files == [gateway.root.as_posix() + "/group\\xe9"]
