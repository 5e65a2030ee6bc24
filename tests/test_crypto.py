"""Decryption with the real gpg: streamed, isolated keyring, and each failure told apart."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from im1.crypto import (
    BadPassphraseError,
    IntegrityError,
    Keyring,
    LocalWriteError,
    NoSecretKeyError,
    NotPgpError,
    TruncatedInputError,
)

PLAIN = b'"A","B"\r\n' + b"".join(b'"%d","caf\xc3\xa9 %d"\r\n' % (i, i) for i in range(50000))


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory, pgp_keys, other_pgp_keys):
    d = tmp_path_factory.mktemp("gpg")
    (d / "plain.csv").write_bytes(PLAIN)
    with Keyring() as kr:
        kr.import_key(pgp_keys.public_armored)
        kr.import_key(other_pgp_keys.public_armored)
        kr.encrypt_file(d / "plain.csv", d / "ok.csv.gpg", pgp_keys.fingerprint)
        kr.encrypt_file(d / "plain.csv", d / "other.csv.gpg", other_pgp_keys.fingerprint)
    data = (d / "ok.csv.gpg").read_bytes()
    (d / "truncated.csv.gpg").write_bytes(data[: len(data) // 2])
    tampered = bytearray(data)
    tampered[-10] ^= 0x55
    (d / "tampered.csv.gpg").write_bytes(bytes(tampered))
    (d / "junk.csv.gpg").write_bytes(b"this is not encrypted\r\n")
    (d / "empty.csv.gpg").write_bytes(b"")
    return d


def _decrypt(keys, src: Path, dst: Path, passphrase=None):
    with Keyring() as kr:
        kr.import_key(keys.secret_armored, keys.passphrase)
        kr.decrypt_file(src, dst, passphrase=keys.passphrase if passphrase is None else passphrase)


def test_round_trip_is_exact(encrypted, pgp_keys, tmp_path):
    _decrypt(pgp_keys, encrypted / "ok.csv.gpg", tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_bytes() == PLAIN


@pytest.mark.parametrize(
    ("name", "passphrase", "error", "words"),
    [
        ("other.csv.gpg", None, NoSecretKeyError, "no secret key"),
        ("ok.csv.gpg", "wrong passphrase", BadPassphraseError, "bad passphrase"),
        ("truncated.csv.gpg", None, TruncatedInputError, "truncated input"),
        ("tampered.csv.gpg", None, IntegrityError, "integrity check failed"),
        ("junk.csv.gpg", None, NotPgpError, "not an OpenPGP message"),
        ("empty.csv.gpg", None, NotPgpError, "empty"),
    ],
)
def test_each_failure_is_specific_and_leaves_no_plaintext(encrypted, pgp_keys, tmp_path, name, passphrase,
                                                          error, words):
    out = tmp_path / "out.csv"
    with pytest.raises(error) as err:
        _decrypt(pgp_keys, encrypted / name, out, passphrase=passphrase)
    assert words in str(err.value) and name in str(err.value)
    assert not out.exists()


def test_keyring_is_isolated_and_removed():
    with Keyring() as kr:
        home = kr.home
        assert (home.stat().st_mode & 0o777) == 0o700
        assert kr.gpg.list_keys(True) == []
    assert not home.exists()


def test_streaming_decrypt_yields_plaintext_and_fails_late_on_tampering(encrypted, pgp_keys, tmp_path):
    with Keyring() as kr:
        kr.import_key(pgp_keys.secret_armored, pgp_keys.passphrase)
        with kr.decrypting(encrypted / "ok.csv.gpg", tmp_path / "ok.csv", passphrase=pgp_keys.passphrase) as s:
            data = b"".join(iter(lambda: s.read(7919), b""))
        assert data == PLAIN
        got = b""
        with pytest.raises(IntegrityError):
            with kr.decrypting(encrypted / "tampered.csv.gpg", tmp_path / "bad.csv",
                               passphrase=pgp_keys.passphrase) as s:
                while chunk := s.read(65536):
                    got += chunk
        assert len(got) > 0  # data flowed before the integrity check failed at the end
        assert not (tmp_path / "bad.csv").exists()
        with pytest.raises(NoSecretKeyError):
            with kr.decrypting(encrypted / "other.csv.gpg", tmp_path / "o.csv", passphrase="x") as s:
                s.read(10)


class _FinishesBetweenChecks:
    """A decrypting thread seen as alive until the check itself, during which gpg creates, writes
    and closes the whole (small) file: the interleaving that made the first read return nothing."""

    def __init__(self, path, data: bytes):
        self.path, self.data = path, data

    def is_alive(self) -> bool:
        if not self.path.exists():
            self.path.write_bytes(self.data)
        return False


def test_stream_reads_a_file_written_while_it_checked_for_it(tmp_path):
    from im1.crypto import PlaintextStream

    path = tmp_path / "plain.csv"
    stream = PlaintextStream(path, _FinishesBetweenChecks(path, b'"A","B"\r\n"1","2"\r\n'), {})
    try:
        assert stream.read() == b'"A","B"\r\n"1","2"\r\n'
        assert stream.read() == b""
    finally:
        stream.close()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_a_local_write_error_not_a_good_decryption(encrypted, pgp_keys):
    """gpg reports DECRYPTION_OKAY even when it could not write the plaintext (it exits 2 and says
    "No space left on device"): that must fail as the machine's fault, never pass as a short file.
    /dev/full fails every write with ENOSPC, as a full disk does; it must survive the clean-up."""
    with pytest.raises(LocalWriteError, match="No space left on device") as err:
        _decrypt(pgp_keys, encrypted / "ok.csv.gpg", Path("/dev/full"))
    assert "a local fault, not the delivery's" in str(err.value) and err.value.reason == "local_write"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
