"""SFTP fetch against a real SFTP server on loopback: pinning, listing, atomic resumable downloads."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from im1.transport.sftp import HostKeyError, RemoteFile, SftpClient, SftpError
from im1dev.sftp_server import public_key_line


def _put(sftp_server, rel: str, data: bytes):
    p = sftp_server.root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


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
    with pytest.raises(HostKeyError, match="CHANGED"):
        SftpClient(wrong).connect()


def test_the_server_refuses_unknown_client_keys(sftp_server, sftp_settings, ssh_keys, tmp_path):
    from im1dev.sftp_server import generate_ed25519

    generate_ed25519(tmp_path / "stranger")
    with pytest.raises(SftpError):
        SftpClient(dataclasses.replace(sftp_settings, private_key=str(tmp_path / "stranger"))).connect()


def test_dropped_connection_resumes_from_the_partial_file(sftp_server, sftp_settings, tmp_path):
    data = os.urandom(5_000_000)
    _put(sftp_server, "feed/big.csv.gpg", data)
    sftp_server.faults.drop_after_bytes["big.csv.gpg"] = 2_000_000
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
    with SftpClient(sftp_settings) as c, pytest.raises(SftpError, match="does not exist"):
        list(c.walk("/no/such/folder"))


def test_a_slow_reader_keeps_what_arrived_before_the_drop(sftp_server, sftp_settings, tmp_path, monkeypatch):
    # a busy client that has not yet read what the server sent must still find those bytes
    # (the fault closes the connection only once they are delivered, as a real network drop would)
    import paramiko

    data = os.urandom(3_000_000)
    _put(sftp_server, "feed/slow.csv.gpg", data)
    sftp_server.faults.drop_after_bytes["slow.csv.gpg"] = 1_500_000
    real_prefetch = paramiko.SFTPFile.prefetch

    def slow_prefetch(self, *a, **kw):
        # the client's transport thread stops reading the socket for a while, as on a busy machine
        packetizer = self.sftp.sock.get_transport().packetizer
        real_read_all = packetizer.read_all
        state = {"slept": False}

        def read_all(n, check_rekey=False):
            if not state["slept"]:
                state["slept"] = True
                time.sleep(1.5)
            return real_read_all(n, check_rekey)

        packetizer.read_all = read_all
        real_prefetch(self, *a, **kw)

    monkeypatch.setattr(paramiko.SFTPFile, "prefetch", slow_prefetch)
    dest = tmp_path / "slow.csv.gpg"
    remote = RemoteFile("/feed/slow.csv.gpg", len(data), 0)
    with pytest.raises(Exception):  # noqa: B017 - the connection drops mid-download
        with SftpClient(sftp_settings) as c:
            c.download(remote, dest)
    part = tmp_path / "slow.csv.gpg.part"
    assert 1_000_000 <= part.stat().st_size < len(data)


@pytest.mark.timeout(90)  # before the fix, the client waited for ever for the SFTP session to start
def test_a_server_that_never_starts_the_sftp_session_is_given_up_on(sftp_server, sftp_settings):
    sftp_server.faults.stall_sftp_start = True
    with pytest.raises(SftpError, match="did not start the SFTP session"):
        SftpClient(dataclasses.replace(sftp_settings, timeout=2)).connect()
    assert not sftp_server.faults.stall_sftp_start  # the fault fired
    with SftpClient(sftp_settings) as c:
        assert list(c.walk("/")) == []


@pytest.mark.timeout(90)
def test_a_stalled_read_is_given_up_on_and_the_next_attempt_resumes(sftp_server, sftp_settings, tmp_path):
    data = os.urandom(3_000_000)
    _put(sftp_server, "feed/stall.csv.gpg", data)
    sftp_server.faults.stall_after_bytes["stall.csv.gpg"] = 1_000_000
    dest = tmp_path / "stall.csv.gpg"
    remote = RemoteFile("/feed/stall.csv.gpg", len(data), 0)
    with SftpClient(dataclasses.replace(sftp_settings, session_timeout=5)) as c:
        with pytest.raises(SftpError, match=r"stall\.csv\.gpg: no answer from the SFTP server for 5 s"):
            c.download(remote, dest)
    kept = (tmp_path / "stall.csv.gpg.part").stat().st_size
    assert not dest.exists() and 0 < kept < len(data)
    with SftpClient(sftp_settings) as c:
        c.download(remote, dest)
    assert dest.read_bytes() == data
    assert sftp_server.faults.first_reads["stall.csv.gpg"][-1] == kept  # resumed, not restarted
