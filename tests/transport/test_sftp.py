"""SFTP fetch against a real SFTP server on loopback: pinning, listing, atomic resumable downloads."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from im1.transport.sftp import HostKeyError, RemoteFile, SftpClient, SftpError
from im1dev.sftp_server import public_key_line


def _put(sftp_server, rel: str, data: bytes):
    p = sftp_server.root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _kept(part) -> int:
    return part.stat().st_size if part.exists() else 0


def test_recursive_listing_and_download(sftp_server, sftp_settings, tmp_path):
    _put(sftp_server, "IM1/sftp/AG/20261102/a.csv.gpg", b"a" * 10)
    _put(sftp_server, "IM1/sftp/AG/20261103/b.csv.gpg", os.urandom(3_000_000))
    with SftpClient(sftp_settings) as c:
        files = list(c.walk("/IM1/sftp/AG"))
        assert [f.path for f in files] == ["/IM1/sftp/AG/20261102/a.csv.gpg", "/IM1/sftp/AG/20261103/b.csv.gpg"]
        out = c.download(files[1], tmp_path / "b.csv.gpg")
    assert out.read_bytes() == (sftp_server.root / "IM1/sftp/AG/20261103/b.csv.gpg").read_bytes()
    assert not (tmp_path / "b.csv.gpg.part").exists()


def test_changed_or_unknown_host_key_is_refused(sftp_server, sftp_settings, ssh_keys):
    wrong = dataclasses.replace(sftp_settings, host_key=public_key_line(ssh_keys["other_host"]))
    with pytest.raises(HostKeyError, match="CHANGED") as err:
        SftpClient(wrong).connect()
    # the two keys as OpenSSH's SHA256 fingerprints (what `ssh-keygen -lf` prints), not look-alike prefixes
    from im1.transport.sftp import fingerprint

    assert fingerprint(ssh_keys["host"]) in str(err.value)
    assert fingerprint(ssh_keys["other_host"]) in str(err.value)
    line = subprocess.run(["ssh-keygen", "-lf", "-"], input=public_key_line(ssh_keys["host"]), text=True,
                          capture_output=True)
    if line.returncode == 0:  # OpenSSH's own tool agrees, where it is installed
        assert fingerprint(ssh_keys["host"]) in line.stdout


def test_the_server_refuses_unknown_client_keys(sftp_server, sftp_settings, ssh_keys, tmp_path):
    from im1dev.sftp_server import generate_ed25519

    generate_ed25519(tmp_path / "stranger")
    with pytest.raises(SftpError):
        SftpClient(dataclasses.replace(sftp_settings, private_key=str(tmp_path / "stranger"))).connect()


def test_dropped_connection_resumes_from_the_partial_file(sftp_server, sftp_settings, tmp_path):
    data = os.urandom(5_000_000)
    _put(sftp_server, "feed/big.csv.gpg", data)
    sftp_server.faults.drop_after_bytes["big.csv.gpg"] = 2_000_000
    sftp_server.faults.client_kept = lambda name: _kept(tmp_path / f"{name}.part")
    dest = tmp_path / "big.csv.gpg"
    remote = RemoteFile("/feed/big.csv.gpg", len(data), 0)
    with pytest.raises(Exception) as dropped:
        with SftpClient(sftp_settings) as c:
            c.download(remote, dest)
    part = tmp_path / "big.csv.gpg.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(data), repr(dropped.value)
    with SftpClient(sftp_settings) as c:
        c.download(remote, dest)
    assert dest.read_bytes() == data and not part.exists()


def test_missing_remote_folder_is_a_clear_error(sftp_server, sftp_settings):
    _put(sftp_server, "IM1/sftp/AG/20261102/a.csv.gpg", b"a")
    with SftpClient(sftp_settings) as c, pytest.raises(SftpError, match="does not exist") as err:
        list(c.walk("/IM1/sftp/WRONG"))
    # where to look instead: the login folder and what the nearest existing parent holds
    assert "login folder is '/'" in str(err.value) and "'/IM1/sftp' holds: AG" in str(err.value)
