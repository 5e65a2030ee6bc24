"""PGP with python-gnupg in an isolated, throw-away keyring.

Each :class:`Keyring` has its own ``GNUPGHOME`` in a private temporary folder (never the user's
keyring), an agent that caches no passphrase, and is destroyed on close (agent killed, folder
removed). Inside that throw-away agent an imported key is re-protected with the smallest S2K
iteration count: the passphrase is still required for every decryption, but unlocking takes
milliseconds instead of about half a second per file (21 files per batch). The key's own
protection in the feed's connection is unchanged, and keys made by :meth:`Keyring.generate` are
protected with gpg's normal count. Decryption streams from file to file through the ``gpg`` process, so memory stays flat
whatever the file size, and every failure is told apart in plain words:

* :class:`NoSecretKeyError` - the file was encrypted to a key we do not hold;
* :class:`BadPassphraseError` - the key is right but its passphrase is not;
* :class:`TruncatedInputError` - the encrypted file ends early (partial download or upload);
* :class:`IntegrityError` - the modification-detection check failed (ciphertext altered);
* :class:`NotPgpError` - the file is empty or not an OpenPGP message at all.

A failed decryption never leaves partial plaintext behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gnupg


class _FileFailure(RuntimeError):
    """A failure about one file: the message starts with its name; gpg's output is in ``detail``."""

    reason = "failed"

    def __init__(self, message: str, *, file: str | None = None, detail: str = ""):
        self.file = file
        self.detail = detail
        super().__init__(f"{file}: {message}" if file else message)


class DecryptError(_FileFailure):
    """Decryption failed because of the file; ``reason`` is a short machine-readable code."""

    reason = "decrypt_failed"


class NoSecretKeyError(DecryptError):
    reason = "no_secret_key"


class BadPassphraseError(DecryptError):
    reason = "bad_passphrase"


class TruncatedInputError(DecryptError):
    reason = "truncated"


class IntegrityError(DecryptError):
    reason = "integrity"


class NotPgpError(DecryptError):
    reason = "not_pgp"


class KeyImportError(RuntimeError):
    pass


class LocalFault(_FileFailure):
    """Decryption failed because of this machine, not the delivery (gpg killed, output not
    writable): the load fails and is retried; nothing of the file is loaded and the delivery is
    not quarantined."""

    reason = "local_fault"


class LocalWriteError(LocalFault):
    """The plaintext could not be written to the local work folder (disk full, quota, file size
    limit)."""

    reason = "local_write"


# gpg's own words when its output cannot be written (it still reports DECRYPTION_OKAY, exit code 2)
_WRITE_FAILED = ("error writing to", "No space left on device", "Disk quota exceeded", "File too large",
                 "write error")


class _GPG(gnupg.GPG):
    """python-gnupg, but a gpg that stops reading early (bad data) does not lose the status report."""

    def _handle_io(self, args, fileobj_or_path, result, passphrase=None, binary=False):
        try:
            return super()._handle_io(args, fileobj_or_path, result, passphrase=passphrase, binary=binary)
        except BrokenPipeError:
            result.broken_pipe = True
            return result


@dataclass(frozen=True)
class KeyPair:
    fingerprint: str
    public_armored: str
    secret_armored: str
    passphrase: str


def gpg_binary() -> str:
    return os.environ.get("IM1_GPG_BINARY", "gpg")


class Keyring:
    """An isolated GnuPG home. Use as a context manager; it is wiped on exit."""

    def __init__(self, home: Path | None = None, *, cache_passphrase: bool = False):
        """``cache_passphrase`` lets the agent keep a passphrase for a moment (needed only while
        generating a key pair, whose subkey must be signed); decryption keyrings never cache."""
        self._owned = home is None
        # agent sockets live in the home; keep the path short (Unix socket names are limited)
        self.home = Path(home) if home else Path(tempfile.mkdtemp(prefix="im1g-"))
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        self._cache_passphrase = cache_passphrase
        self._agent_conf(fast_unlock=True)
        self.gpg = _GPG(gpgbinary=gpg_binary(), gnupghome=str(self.home))
        self.gpg.buffer_size = 1 << 20

    def _agent_conf(self, *, fast_unlock: bool) -> None:
        conf = ("" if self._cache_passphrase else "default-cache-ttl 0\nmax-cache-ttl 0\n") + (
            "s2k-count 65536\n" if fast_unlock else "")
        path = self.home / "gpg-agent.conf"
        if path.exists() and path.read_text() == conf:
            return
        path.write_text(conf)
        # a running agent reads its configuration only when it starts
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if self._owned:
            shutil.rmtree(self.home, ignore_errors=True)

    # -- keys ----------------------------------------------------------------------------------
    def generate(self, name: str, email: str, passphrase: str) -> KeyPair:
        """A new key pair (Ed25519 signing key with a Curve25519 encryption subkey)."""
        self._agent_conf(fast_unlock=False)  # the exported secret key keeps gpg's normal protection
        inp = self.gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            subkey_type="ECDH",
            subkey_curve="cv25519",
            name_real=name,
            name_email=email,
            passphrase=passphrase,
            expire_date=0,
        )
        key = self.gpg.gen_key(inp)
        if not key.fingerprint:
            raise KeyImportError(f"gpg could not generate a key: {key.stderr[-500:]}")
        fpr = str(key.fingerprint)
        return KeyPair(
            fingerprint=fpr,
            public_armored=self.gpg.export_keys(fpr),
            secret_armored=self.gpg.export_keys(fpr, secret=True, passphrase=passphrase),
            passphrase=passphrase,
        )

    def import_key(self, armored: str, passphrase: str | None = None) -> list[str]:
        res = self.gpg.import_keys(armored, passphrase=passphrase) if passphrase else self.gpg.import_keys(armored)
        fprs = [r["fingerprint"] for r in res.results if r.get("fingerprint")]
        if not fprs:
            raise KeyImportError("the key material could not be imported (not an OpenPGP key block?)")
        return sorted(set(fprs))

    # -- data ----------------------------------------------------------------------------------
    def encrypt_file(self, src: Path, dst: Path, recipient: str, *, compress: bool = True) -> None:
        extra = ["--compress-algo", "zlib", "--compress-level", "6"] if compress else ["--compress-algo", "none"]
        with open(src, "rb") as fh:
            res = self.gpg.encrypt_file(
                fh, [recipient], armor=False, always_trust=True, output=str(dst), extra_args=extra
            )
        if not res.ok:
            raise RuntimeError(f"gpg could not encrypt {src.name}: {res.status}: {res.stderr[-300:]}")

    def decrypt_file(self, src: Path, dst: Path, *, passphrase: str | None) -> None:
        """Decrypt ``src`` into ``dst`` (streamed). Raises a :class:`DecryptError` subclass on failure."""
        name = Path(src).name
        try:
            with open(src, "rb") as fh:
                res = self.gpg.decrypt_file(fh, passphrase=passphrase or "", output=str(dst))
        except Exception:
            _discard(dst)
            raise
        # DECRYPTION_OKAY alone is not enough: gpg reports it even when writing the plaintext failed
        # half way (a full disk), and exits 2; the file left behind is cut short. (Exit code 2 alone
        # is no sign: a signed file whose signer's key is not in the keyring also exits 2.)
        stderr = res.stderr or ""
        write_failed = next((line for line in stderr.splitlines()
                             if not line.startswith("[GNUPG:]") and any(w in line for w in _WRITE_FAILED)), None)
        killed = res.returncode is not None and res.returncode < 0
        if res.ok and not getattr(res, "broken_pipe", False) and write_failed is None and not killed:
            return
        _discard(dst)
        if killed:
            sig = signal.Signals(-res.returncode).name if -res.returncode in signal.valid_signals() else -res.returncode
            if sig == "SIGXFSZ":
                write_failed = "the file size limit (ulimit -f) was reached"
            else:
                raise LocalFault(f"gpg was stopped by signal {sig} while decrypting: a local fault, not the "
                                 "delivery's; nothing of the file was loaded; the load is retried",
                                 file=name, detail=stderr[-2000:])
        if write_failed is not None:
            raise LocalWriteError(
                f"could not write the plaintext to {Path(dst).parent} ({write_failed.removeprefix('gpg: ')}): "
                "a local fault, not the delivery's; nothing of the file was loaded. Free space there; "
                "the load is retried", file=name, detail=stderr[-2000:])
        raise classify_failure(stderr, name, src_size=Path(src).stat().st_size)


    @contextlib.contextmanager
    def decrypting(self, src: Path, dst: Path, *, passphrase: str | None) -> Iterator[PlaintextStream]:
        """Decrypt ``src`` into ``dst`` in the background and read the plaintext while it is written.

        The consumer (the COPY) runs concurrently with gpg instead of after it. Reads raise the
        :class:`DecryptError` if gpg fails, even at the very end (a failed integrity check is only
        known once all data has passed), so a consumer that commits after the last read can never
        commit data from a bad file.
        """
        state: dict = {}

        def run() -> None:
            try:
                self.decrypt_file(src, dst, passphrase=passphrase)
            except BaseException as err:
                state["error"] = err

        worker = threading.Thread(target=run, name=f"gpg-decrypt:{Path(src).name}", daemon=True)
        worker.start()
        stream = PlaintextStream(Path(dst), worker, state)
        try:
            yield stream
        finally:
            worker.join()
            stream.close()


class PlaintextStream:
    """File-like reader over a file another thread is still writing (see Keyring.decrypting)."""

    POLL = 0.002

    def __init__(self, path: Path, worker: threading.Thread, state: dict):
        self.path = path
        self._worker = worker
        self._state = state
        self._fh = None

    def _finish(self) -> bytes:
        err = self._state.get("error")
        if err is not None:
            raise err
        return b""

    def read(self, n: int = 1 << 20) -> bytes:
        while True:
            if self._fh is None:
                # liveness first: gpg may create, write and finish the file between the two checks,
                # and a file that appeared after "not alive" was seen is still read
                alive = self._worker.is_alive()
                if self.path.exists():
                    self._fh = open(self.path, "rb")
                elif not alive:
                    return self._finish()
                else:
                    time.sleep(self.POLL)
                    continue
            data = self._fh.read(n)
            if data:
                return data
            if not self._worker.is_alive():
                data = self._fh.read(n)  # drain what was written just before gpg exited
                return data if data else self._finish()
            time.sleep(self.POLL)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _discard(path: Path) -> None:
    """Remove a partial plaintext file (only a regular file: never a device node such as /dev/full)."""
    p = Path(path)
    if p.is_file() and not p.is_symlink():
        p.unlink(missing_ok=True)


_KEYID = re.compile(r"NO_SECKEY ([0-9A-F]+)")


def classify_failure(stderr: str, name: str, *, src_size: int = -1) -> DecryptError:
    """Turn gpg's status output into one specific, actionable error."""
    tail = "\n".join(line for line in stderr.splitlines() if "KEY_CONSIDERED" not in line)[-2000:]
    if src_size == 0 or (("NODATA" in stderr) and "ENC_TO" not in stderr):
        if src_size == 0:
            return NotPgpError("the file is empty (0 bytes): nothing to decrypt", file=name, detail=tail)
        return NotPgpError("this is not an OpenPGP message (no encrypted data found)", file=name, detail=tail)
    if "Bad passphrase" in stderr or "BAD_PASSPHRASE" in stderr:
        return BadPassphraseError(
            "bad passphrase: the private key was found but its passphrase is wrong "
            "(check the passphrase in the feed's PGP connection)",
            file=name,
            detail=tail,
        )
    if "NO_SECKEY" in stderr and "DECRYPTION_KEY" not in stderr:
        ids = ", ".join(sorted(set(_KEYID.findall(stderr))))
        return NoSecretKeyError(
            f"no secret key: the file is encrypted to key ID {ids}, which is not the feed's private key "
            "(wrong key configured, or the supplier used an old public key)",
            file=name,
            detail=tail,
        )
    if "read error" in stderr or "pending bytes" in stderr or "unexpected EOF" in stderr.lower():
        return TruncatedInputError(
            "truncated input: the encrypted file ends early (incomplete download or upload); fetch it again",
            file=name,
            detail=tail,
        )
    if "BADMDC" in stderr or "manipulated" in stderr or "invalid packet" in stderr or "CRC error" in stderr:
        return IntegrityError(
            "integrity check failed: the ciphertext has been altered or corrupted; do not use this file",
            file=name,
            detail=tail,
        )
    if "NODATA" in stderr:
        return TruncatedInputError(
            "truncated input: no complete encrypted packet could be read", file=name, detail=tail
        )
    return DecryptError(f"decryption failed: {tail.splitlines()[-1] if tail else 'unknown error'}", file=name, detail=tail)


@contextlib.contextmanager
def keyring_with(secret_armored: str, passphrase: str | None):
    """A throw-away keyring holding one private key (from a connection or the environment)."""
    with Keyring() as kr:
        kr.import_key(secret_armored, passphrase)
        yield kr
