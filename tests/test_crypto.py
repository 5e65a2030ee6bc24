"""Decryption with the real gpg: streamed, isolated keyring, and each failure told apart."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from im1.crypto import (
    BadPassphraseError,
    DecryptError,
    IntegrityError,
    Keyring,
    LocalFault,
    LocalWriteError,
    NoSecretKeyError,
    NotEncryptedError,
    NotPgpError,
    PlaintextTooLargeError,
    SymmetricOnlyError,
    TruncatedInputError,
    WrongKeyError,
    gpg_binary,
)
from im1.ingest.errors import QUARANTINE_ERRORS

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


def _decrypt(keys, src: Path, dst: Path, passphrase=None, **kw):
    with Keyring() as kr:
        kr.import_key(keys.secret_armored, keys.passphrase)
        kr.decrypt_file(src, dst, passphrase=keys.passphrase if passphrase is None else passphrase, **kw)


def test_round_trip_is_exact(encrypted, pgp_keys, tmp_path):
    _decrypt(pgp_keys, encrypted / "ok.csv.gpg", tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_bytes() == PLAIN


@pytest.mark.parametrize(
    ("name", "passphrase", "error", "words"),
    [
        ("other.csv.gpg", None, NoSecretKeyError, "not encrypted to the feed's key"),
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


# -- hostile deliveries (issue 13), each made with the gpg command line as a supplier would ---------------

def gpg_cli(home: Path, *args, stdin=None) -> None:
    """Run the real gpg command line in ``home`` (a supplier's keyring)."""
    subprocess.run([gpg_binary(), "--homedir", str(home), "--batch", "--yes", "--trust-model", "always",
                    "--pinentry-mode", "loopback", *map(str, args)], input=stdin, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


BOMB_SOURCE = 64 << 20  # bytes of zeros behind the bomb (it encrypts to ~70 KB)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, pgp_keys, other_pgp_keys):
    """Files a supplier's gpg makes that are not 'encrypted to the feed's key': signed only, literal,
    symmetric, encrypted to someone else but claiming our key ID, and a compression bomb."""
    d = tmp_path_factory.mktemp("hostile")
    plain = d / "plain.csv"
    plain.write_bytes(PLAIN[:5000])
    signer = ["-u", other_pgp_keys.fingerprint, "--passphrase", other_pgp_keys.passphrase]
    with Keyring() as kr:
        kr.import_key(pgp_keys.public_armored)
        kr.import_key(other_pgp_keys.secret_armored, other_pgp_keys.passphrase)
        gpg_cli(kr.home, *signer, "--sign", "-o", d / "signed.csv.gpg", plain)
        gpg_cli(kr.home, *signer, "--clearsign", "-o", d / "clearsigned.csv.asc", plain)
        gpg_cli(kr.home, "--store", "-o", d / "literal.csv.gpg", plain)
        gpg_cli(kr.home, "--passphrase", "supplier-secret", "--symmetric", "-o", d / "symmetric.csv.gpg", plain)
        gpg_cli(kr.home, "-e", "-r", pgp_keys.fingerprint, "-o", d / "ours.csv.gpg", plain)
        gpg_cli(kr.home, "-e", "-r", other_pgp_keys.fingerprint, "-o", d / "theirs.csv.gpg", plain)
        subprocess.run(f"head -c {BOMB_SOURCE} /dev/zero | {gpg_binary()} --homedir {kr.home} --batch --yes "
                       f"--trust-model always --compress-algo zlib -z 9 -e -r {pgp_keys.fingerprint} "
                       f"-o {d / 'bomb.csv.gpg'}", shell=True, check=True, stderr=subprocess.DEVNULL)
    # the public-key packet (old format, 1-byte length, version 3) names its recipient's key ID at 3..11:
    # encrypted to someone else, it is made to claim the feed's encryption subkey
    ours, theirs = (d / "ours.csv.gpg").read_bytes(), bytearray((d / "theirs.csv.gpg").read_bytes())
    assert ours[0] == theirs[0] == 0x84 and ours[2] == theirs[2] == 3
    theirs[3:11] = ours[3:11]
    (d / "forged.csv.gpg").write_bytes(bytes(theirs))
    return d


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        ("signed.csv.gpg", NotEncryptedError, "signed but not encrypted"),
        ("clearsigned.csv.asc", NotEncryptedError, "signed but not encrypted"),
        ("literal.csv.gpg", NotEncryptedError, "literal data"),
        ("symmetric.csv.gpg", SymmetricOnlyError, "encrypted with a passphrase only"),
        ("forged.csv.gpg", WrongKeyError, "does not decrypt with that key"),
        ("theirs.csv.gpg", NoSecretKeyError, "not encrypted to the feed's key"),
    ],
)
def test_a_file_not_encrypted_to_us_is_refused_naming_what_it_is(hostile, pgp_keys, tmp_path, name, error, words):
    out = tmp_path / "out.csv"
    with pytest.raises(error) as err:
        _decrypt(pgp_keys, hostile / name, out)
    assert words in str(err.value) and name in str(err.value)
    assert "the supplier must" in str(err.value)  # whose fault, and what cures it
    assert isinstance(err.value, QUARANTINE_ERRORS)  # the delivery's fault: quarantined
    assert not out.exists()


def test_a_wrong_passphrase_is_our_configuration_fault_not_the_delivery(encrypted, pgp_keys, tmp_path):
    out = tmp_path / "out.csv"
    with pytest.raises(BadPassphraseError) as err:
        _decrypt(pgp_keys, encrypted / "ok.csv.gpg", out, passphrase="wrong passphrase")
    assert "bad passphrase" in str(err.value) and "feed's PGP connection" in str(err.value)
    assert isinstance(err.value, LocalFault) and not isinstance(err.value, DecryptError)
    assert not isinstance(err.value, QUARANTINE_ERRORS)  # the load fails and is retried; nothing quarantined
    assert not out.exists()


def test_our_own_key_failing_here_is_a_local_fault_not_the_delivery(encrypted, pgp_keys, tmp_path):
    # the keyring holds the feed's key but its secret part cannot be used here (a damaged keyring, a
    # failed agent): gpg says "no secret key" for our own key ID; the delivery is not to blame
    out = tmp_path / "out.csv"
    with Keyring() as kr:
        kr.import_key(pgp_keys.secret_armored, pgp_keys.passphrase)
        for f in (kr.home / "private-keys-v1.d").iterdir():
            f.unlink()
        with pytest.raises(LocalFault) as err:
            kr.decrypt_file(encrypted / "ok.csv.gpg", out, passphrase=pgp_keys.passphrase)
    assert "local fault" in str(err.value) and "feed's own key" in str(err.value)
    assert not isinstance(err.value, QUARANTINE_ERRORS) and not out.exists()


def test_a_compression_bomb_stops_at_the_limit(hostile, pgp_keys, tmp_path):
    """A ~70 KB file that expands to 64 MiB: gpg is stopped at the limit; no more than the limit is
    ever written or read, and nothing is left behind."""
    limit = 1 << 20
    out = tmp_path / "out.csv"
    with pytest.raises(PlaintextTooLargeError) as err:
        _decrypt(pgp_keys, hostile / "bomb.csv.gpg", out, limit=limit)
    assert f"expands beyond {limit} bytes" in str(err.value) and isinstance(err.value, QUARANTINE_ERRORS)
    assert not out.exists()
    got = 0
    with Keyring() as kr:
        kr.import_key(pgp_keys.secret_armored, pgp_keys.passphrase)
        with pytest.raises(PlaintextTooLargeError, match=f"expands beyond {limit} bytes"):
            with kr.decrypting(hostile / "bomb.csv.gpg", out, passphrase=pgp_keys.passphrase, limit=limit) as s:
                while chunk := s.read(65536):
                    got += len(chunk)
                    assert got <= limit
    assert 0 < got <= limit and not out.exists()


def test_the_default_limit_lets_a_normal_file_through(encrypted, pgp_keys, tmp_path):
    from im1.config import Feed
    from im1.crypto import DEFAULT_PLAINTEXT_FLOOR, DEFAULT_PLAINTEXT_RATIO, plaintext_limit

    size = (encrypted / "ok.csv.gpg").stat().st_size
    assert plaintext_limit(size) >= 64 << 20 and plaintext_limit(10 << 20) == 100 * (10 << 20)
    # a feed's defaults are the same
    fields = Feed.model_fields
    assert fields["max_plaintext_ratio"].default == DEFAULT_PLAINTEXT_RATIO
    assert fields["min_plaintext_limit_mb"].default * 2**20 == DEFAULT_PLAINTEXT_FLOOR
    _decrypt(pgp_keys, encrypted / "ok.csv.gpg", tmp_path / "out.csv", limit=plaintext_limit(size))
    assert (tmp_path / "out.csv").read_bytes() == PLAIN


def _gpg_decrypting(home: Path) -> list[int]:
    """Process ids of the gpg processes decrypting in keyring ``home``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--decrypt" in args and str(home).encode() in args:
            pids.append(int(proc.name))
    return pids


def test_a_consumer_that_fails_stops_gpg_at_once(encrypted, pgp_keys, tmp_path):
    """COPY failing mid-stream (a bad row) stops gpg there and then - killed and reaped - instead of
    letting it decrypt to the end. The ciphertext comes through a pipe whose second half is held back
    until the consumer's failure has been handled: a gpg left running would wait for it."""
    data = (encrypted / "ok.csv.gpg").read_bytes()
    fifo = tmp_path / "slow.csv.gpg"
    os.mkfifo(fifo)
    released, seen = threading.Event(), {}

    def supplier() -> None:
        with open(fifo, "wb") as w:
            w.write(data[: len(data) // 2])
            w.flush()
            seen["held_back_until_timeout"] = not released.wait(30)
            try:
                w.write(data[len(data) // 2:])
            except BrokenPipeError:
                pass

    feeder = threading.Thread(target=supplier)
    with Keyring() as kr:
        kr.import_key(pgp_keys.secret_armored, pgp_keys.passphrase)
        feeder.start()
        try:
            with pytest.raises(RuntimeError, match="COPY failed"):
                with kr.decrypting(fifo, tmp_path / "out.csv", passphrase=pgp_keys.passphrase) as s:
                    assert s.read(1000)
                    [seen["pid"]] = _gpg_decrypting(kr.home)
                    raise RuntimeError("COPY failed at line 3")
        finally:
            released.set()
            feeder.join()
    assert seen["held_back_until_timeout"] is False, "gpg was left running after the consumer failed"
    assert not Path(f"/proc/{seen['pid']}").exists()  # not running, and reaped (no zombie)
    assert not (tmp_path / "out.csv").exists()
