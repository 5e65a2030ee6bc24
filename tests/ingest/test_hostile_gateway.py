"""Issue 13, hostile SystmOne deliveries: names and folders chosen by whoever writes into the
gateway never mix two batches, never break the fetch of the batches beside them, and never make
the platform read a file from outside the gateway (a symbolic link) or hang on one (a FIFO).

Real parts throughout: the gateway folder on disk, the real warehouse and ledger."""

from __future__ import annotations

import os
from pathlib import Path

from im1 import tpp
from tests.ingest.conftest import run_tpp, tpp_count
from tests.ingest.test_tpp_ingest import file_rows, ledger_files, tpp_batches

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
