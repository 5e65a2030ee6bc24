"""A batch re-sent under another name is recognised by its content and not loaded twice; legitimate
repeats (empty delta files, lookup tables identical day after day, quiet days) still load.

Real parts throughout: the synthetic supplier's batches on the SFTP server (EMIS, real gpg) and in
a gateway folder (TPP), the real warehouse, :meth:`Pipeline.run_once`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from im1 import tpp
from im1.crypto import Keyring
from im1.ingest.errors import QuarantineError
from tests.ingest.conftest import batches, raw_count, run_core, run_tpp, tpp_count

ODS = "Z91131"


def _plain_hashes(conn, feed_id: str) -> dict[tuple[str, str], tuple[str, int]]:
    """(batch key, table) -> (plaintext sha256, rows) of every loaded file of the feed."""
    rows = conn.execute(
        """select b.batch_key, f.table_name, f.plain_sha256, f.rows_in_file from ingest.files f
             join ingest.batches b using (batch_id) where b.feed_id = %s and f.status = 'loaded'""",
        (feed_id,)).fetchall()
    return {(k, t): (h, n) for k, t, h, n in rows}


def _emis_resend(site, folder: Path, number: str, *, re_encrypt: bool) -> Path:
    """Every file of a published EMIS batch again, next to it, with ``number`` as its batch number:
    byte for byte, or decrypted and encrypted again (new ciphertext, same plaintext)."""
    target = folder.parent / f"{folder.name}_resend_{number}"
    target.mkdir()
    with Keyring() as kr, tempfile.TemporaryDirectory() as tmp:
        kr.import_key(site.keys.secret_armored, site.keys.passphrase)
        for p in sorted(folder.glob("*.csv.gpg")):
            export, _number, rest = p.name.split("_", 2)
            dest = target / f"{export}_{number}_{rest}"
            if re_encrypt:
                plain = Path(tmp) / "plain.csv"
                kr.decrypt_file(p, plain, passphrase=site.keys.passphrase)
                kr.encrypt_file(plain, dest, site.keys.fingerprint)
            else:
                shutil.copyfile(p, dest)
    return target


@pytest.mark.parametrize(("number", "re_encrypt"), [("000007", False), ("1", False), ("000008", True)],
                         ids=["another_number", "leading_zeros_dropped", "re_encrypted"])
def test_an_emis_batch_re_sent_under_another_number_is_held_not_loaded_again(site, loader, number, re_encrypt):
    world = site.world([ODS])
    folder = site.publish(world, 0)  # batch number 000001
    feed = site.feed(f"emis_resend_{number}_{int(re_encrypt)}", [ODS])
    [ok] = run_core(site, feed)
    assert ok.status == "loaded"
    first = batches(loader, feed.id)[0][1]
    patients = raw_count(loader, "admin_patient", feed.id)
    copy = _emis_resend(site, folder, number, re_encrypt=re_encrypt)
    if re_encrypt:  # the ciphertext differs: only the plaintext tells it is the same batch
        some = sorted(folder.glob("*Admin_Patient*"))[0]
        assert some.read_bytes() != next(copy.glob("*Admin_Patient*")).read_bytes()
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError)
    assert "same content" in str(err) and first in str(err)
    assert raw_count(loader, "admin_patient", feed.id) == patients  # nothing loaded twice
    [(_, k1, s1, *_), (_, k2, s2, _, _, reason)] = batches(loader, feed.id)
    assert (k1, s1) == (first, "loaded") and s2 == "quarantined" and k2.endswith(k1.split("@")[1])
    assert f"already loaded as batch {first}" in reason and "release" in reason
    assert run_core(site, feed) == []  # held until an operator releases it


def test_a_released_re_send_is_loaded_as_asked(site, loader):
    from im1.ingest import status

    world = site.world([ODS])
    folder = site.publish(world, 0)
    feed = site.feed("emis_resend_released", [ODS])
    assert run_core(site, feed)[0].status == "loaded"
    patients = raw_count(loader, "admin_patient", feed.id)
    _emis_resend(site, folder, "000009", re_encrypt=False)
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError)
    held = loader.execute("select batch_id from ingest.batches where feed_id = %s and status = 'quarantined'",
                          (feed.id,)).fetchone()[0]
    status.release(loader, held, "the supplier asks us to load it again")
    [ok] = run_core(site, feed)
    assert ok.status == "loaded" and raw_count(loader, "admin_patient", feed.id) == 2 * patients


def test_next_day_emis_deltas_sharing_empty_files_with_the_last_batch_are_loaded(site, loader):
    from im1dev.synth import supplier

    world = site.world([ODS], days=3)
    with Keyring() as kr:
        kr.import_key(site.keys.public_armored)
        for day in range(3):  # the bulk, then two daily deltas (tables without changes: header only)
            supplier.publish_emis_day(world, day, site.feed_dir, keyring=kr, recipient=site.keys.fingerprint)
    feed = site.feed("emis_resend_next_day", [ODS])
    results = run_core(site, feed)
    assert [getattr(r, "status", r) for r in results] == ["loaded"] * 3
    hashes = _plain_hashes(loader, feed.id)
    assert all(h for h, _ in hashes.values())  # every loaded file has its plaintext hash
    d1, d2 = sorted({k for k, _ in hashes}, key=lambda k: k.split("@")[1])[1:]
    same_empty = [t for (k, t), (h, n) in hashes.items() if k == d1 and n == 0 and hashes[(d2, t)] == (h, 0)]
    assert same_empty  # what the rule must tolerate is really there: identical empty delta files


def test_a_multi_organisation_delivery_re_sent_is_held_for_every_organisation(site, loader):
    ods = ["Z91132", "Z91133"]
    world = site.world(ods)
    folder = site.publish(world, 0)
    feed = site.feed("emis_resend_multi", ods, extract="multi_organisation")
    assert [r.status for r in run_core(site, feed)] == ["loaded", "loaded"]
    counts = {t: raw_count(loader, t, feed.id) for t in ("admin_patient", "admin_organisation")}
    _emis_resend(site, folder, "000002", re_encrypt=True)
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError) and "every organisation" in str(err) and "same content" in str(err)
    assert {t: raw_count(loader, t, feed.id) for t in counts} == counts  # shared tables not loaded again either
    held = [r for r in batches(loader, feed.id) if r[2] == "quarantined"]
    assert sorted(r[0] for r in held) == ["*", *ods]
    assert all("already loaded as batch bulk_000001@" in r[5] for r in held)
    assert loader.execute("select count(*) from pg_tables where schemaname = 'stage_emis'").fetchone() == (0,)


# -- TPP ---------------------------------------------------------------------------------------------

def _manifest_dates(folder: Path) -> tuple[str, str]:
    row = next(r for r in tpp.parse_manifest((folder / tpp.MANIFEST).read_bytes()).rows if r.date_to)
    return (f"{row.date_from:%Y%m%d_%H%M}" if row.date_from else "", f"{row.date_to:%Y%m%d_%H%M}")


def _tpp_folder(root: Path, name: str, files: dict[str, bytes], listed: list[str], dates: tuple[str, str],
                delta: str = "Y") -> Path:
    """A batch folder written as TPP does: the files, then SRManifest.csv listing ``listed``."""
    folder = root / name
    folder.mkdir()
    for n, data in files.items():
        (folder / n).write_bytes(data)
    lines = ['"FileName","IsDelta","IsReference","DateExtractFrom","DateExtractTo"']
    lines += [f'"{t}","{delta}","N","{dates[0]}","{dates[1]}"' for t in listed]
    (folder / tpp.MANIFEST).write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    return folder


def _shift(stamp: str, days: int) -> str:
    import datetime as dt

    return f"{tpp.parse_stamp(stamp) + dt.timedelta(days=days):%Y%m%d_%H%M}"


def test_tpp_re_send_with_a_new_extract_time_is_held_and_quiet_days_still_load(gateway, loader):
    ods = "Z93131"
    world = gateway.world(ods)
    feed = gateway.feed("tpp_resend_content", ods)
    day0, day1 = gateway.publish(world, 0), gateway.publish(world, 1)
    lookup = (day0 / "SRMapping.csv").read_bytes()  # a lookup TPP sends again, unchanged
    (day1 / "SRMapping.csv").write_bytes(lookup)
    assert [r.status for r in run_tpp(gateway.loader_url, feed)] == ["loaded", "loaded"]
    # two quiet days: nothing changed but the lookup (identical) and an empty delta file (identical)
    frm, to = _manifest_dates(day1)
    empty = (day0 / "SRProblem.csv").read_bytes().split(b"\r\n")[0] + b"\r\n"
    quiet = [_tpp_folder(gateway.root, _shift(day1.name[:8] + "_0000", d)[:8] + "_0315",
                         {"SRMapping.csv": lookup, "SRProblem.csv": empty}, ["SRProblem"],
                         (_shift(frm, d), _shift(to, d))) for d in (1, 2)]
    assert [r.status for r in run_tpp(gateway.loader_url, feed)] == ["loaded", "loaded"], quiet
    srrota = tpp_count(loader, "srrota", feed.id)
    # day 1 again, in another folder under a manifest with a later DateExtractTo: same content
    copy = gateway.root / (_shift(day1.name[:8] + "_0000", 5)[:8] + "_0315")
    shutil.copytree(day1, copy)
    text = (copy / tpp.MANIFEST).read_text("cp1252")
    (copy / tpp.MANIFEST).write_text(text.replace(to, _shift(to, 5)).replace(frm, _shift(frm, 5)), "cp1252")
    [err] = run_tpp(gateway.loader_url, feed)
    assert isinstance(err, QuarantineError) and "same content" in str(err) and day1.name in str(err)
    assert tpp_count(loader, "srrota", feed.id) == srrota
    status = dict(loader.execute("select batch_key, status from ingest.batches where feed_id = %s",
                                 (feed.id,)).fetchall())
    assert status == {day0.name: "loaded", day1.name: "loaded", quiet[0].name: "loaded", quiet[1].name: "loaded",
                      copy.name: "quarantined"}


def test_tpp_full_files_that_go_back_to_earlier_content_load(gateway, loader):
    # a full file (IsDelta N) replaces the table: A, then B, then A again is the practice's state, not a re-send
    ods = "Z93132"
    world = gateway.world(ods)
    feed = gateway.feed("tpp_full_again", ods)
    day0, day1 = gateway.publish(world, 0), gateway.publish(world, 1)
    assert [r.status for r in run_tpp(gateway.loader_url, feed)] == ["loaded", "loaded"]
    frm, to = _manifest_dates(day1)
    a = (day0 / "SRRota.csv").read_bytes()
    header, *rows = a.split(b"\r\n")
    b = b"\r\n".join([header, *rows[1:]])
    assert a != b and len([r for r in rows if r]) > 1
    names = [_tpp_folder(gateway.root, _shift(day1.name[:8] + "_0000", d)[:8] + "_0315", {"SRRota.csv": data},
                         ["SRRota"], (_shift(frm, d), _shift(to, d)), delta="N")
             for d, data in ((1, a), (2, b), (3, a))]
    assert [r.status for r in run_tpp(gateway.loader_url, feed)] == ["loaded"] * 3, names
