"""The local gateway folder is read without following links and never waits on a FIFO (issue 13)."""

from __future__ import annotations

import os

import pytest

from im1.transport.folder import FolderClient
from im1.transport.sftp import DownloadSizeError, RefusedFileError, RemoteFile

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]  # before the fix, reading a FIFO blocked for ever


@pytest.fixture()
def gw(tmp_path):
    root = tmp_path / "gateway"
    (root / "20261102_0000").mkdir(parents=True)
    (root / "20261102_0000" / "SRPatient.csv").write_bytes(b'"RowIdentifier"\r\n"1"\r\n')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_bytes(b"not the supplier's")
    return root, outside


def test_links_and_fifos_are_listed_only_when_asked_and_never_walked_into(gw):
    root, outside = gw
    batch = root / "20261102_0000"
    (batch / "SRCode.csv").symlink_to(outside / "secret.csv")
    os.mkfifo(batch / "SREvent.csv")
    (root / "linked_batch").symlink_to(outside, target_is_directory=True)
    with FolderClient(root) as c:
        plain = [(f.path, f.kind) for f in c.walk(root)]
        every = {f.path: f.kind for f in c.walk(root, special=True)}
    assert plain == [((batch / "SRPatient.csv").as_posix(), "file")]
    assert every == {(batch / "SRCode.csv").as_posix(): "symbolic link", (batch / "SREvent.csv").as_posix(): "FIFO",
                     (batch / "SRPatient.csv").as_posix(): "file", (root / "linked_batch").as_posix(): "symbolic link"}


@pytest.mark.parametrize("make", ["symlink", "fifo", "linked_folder", "hard_link"])
def test_a_file_swapped_after_listing_is_refused(gw, tmp_path, make):
    root, outside = gw
    target = root / "20261102_0000" / "SRPatient.csv"
    with FolderClient(root) as c:
        [listed] = list(c.walk(root))
        if make == "symlink":
            target.unlink()
            target.symlink_to(outside / "secret.csv")
            why = "SRPatient.csv is a symbolic link"
        elif make == "fifo":
            target.unlink()
            os.mkfifo(target)
            why = "SRPatient.csv is a FIFO"
        elif make == "hard_link":  # a file from outside, under the listed name (same size, to pass that check)
            (outside / "secret.csv").write_bytes(b"x" * target.stat().st_size)
            target.unlink()
            os.link(outside / "secret.csv", target)
            why = "SRPatient.csv is a hard link"
        else:
            (root / "20261102_0000").rename(outside / "batch")
            (root / "20261102_0000").symlink_to(outside / "batch", target_is_directory=True)
            why = "20261102_0000 is a symbolic link now"
        with pytest.raises(RefusedFileError, match=why):
            c.download(listed, tmp_path / "archive" / "SRPatient.csv")
        with pytest.raises(RefusedFileError, match=why):
            c.read_bytes(listed.path)
    assert not (tmp_path / "archive" / "SRPatient.csv").exists()
    assert not (tmp_path / "archive" / "SRPatient.csv.part").exists()


def test_a_file_that_changed_since_it_was_listed_is_not_copied(gw, tmp_path):
    root, _ = gw
    with FolderClient(root) as c:
        [listed] = list(c.walk(root))
        with open(listed.path, "ab") as fh:
            fh.write(b'"2"\r\n')
        with pytest.raises(DownloadSizeError, match="will retry"):
            c.download(listed, tmp_path / "SRPatient.csv")
        again = RemoteFile(listed.path, os.stat(listed.path).st_size, 0)
        assert c.download(again, tmp_path / "SRPatient.csv").read_bytes() == open(listed.path, "rb").read()


def test_a_folder_too_deep_is_listed_as_such_not_walked(gw, monkeypatch):
    from im1.transport import folder

    root, _ = gw
    monkeypatch.setattr(folder, "MAX_DEPTH", 2)
    deep = root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "SRPatient.csv").write_bytes(b"x")
    (root / "a" / "b" / "SRCode.csv").write_bytes(b"y")
    with FolderClient(root) as c:
        every = {f.path: f.kind for f in c.walk(root, special=True)}
    assert every[(root / "a" / "b" / "SRCode.csv").as_posix()] == "file"
    assert every[deep.as_posix()] == "folder more than 2 levels deep"
    assert (deep / "SRPatient.csv").as_posix() not in every
