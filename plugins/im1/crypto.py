"""PGP with python-gnupg in an isolated, throw-away keyring.

Each :class:`Keyring` has its own ``GNUPGHOME`` in a private temporary folder (never the user's
keyring), an agent that caches no passphrase, and is destroyed on close (agent killed, folder
removed). Inside that throw-away agent an imported key is re-protected with the smallest S2K
iteration count: the passphrase is still required for every decryption, but unlocking takes
milliseconds instead of about half a second per file (21 files per batch). The key's own
protection in the feed's connection is unchanged, and keys made by :meth:`Keyring.generate` are
protected with gpg's normal count. Decryption streams from file to file through the ``gpg`` process, so memory stays flat
whatever the file size. gpg writes the plaintext to a pipe and we copy it into the work folder, at
most :func:`plaintext_limit` bytes per file: a compressed "bomb" (a few KB that expand to
gigabytes) is stopped there and gpg killed. Every failure is told apart from gpg's ``--status-fd``
report, in plain words saying whose fault it is:

the delivery's (quarantined, :class:`DecryptError`):

* :class:`NoSecretKeyError` - the file is not encrypted to the feed's key (only to other keys);
* :class:`WrongKeyError` - it names the feed's key as recipient, but does not decrypt with it;
* :class:`SymmetricOnlyError` - it is encrypted with a passphrase, not to a public key;
* :class:`NotEncryptedError` - it is signed only, or literal data: not encrypted at all;
* :class:`TruncatedInputError` - the encrypted file ends early (partial download or upload);
* :class:`IntegrityError` - the modification-detection check failed (ciphertext altered);
* :class:`NotPgpError` - the file is empty or not an OpenPGP message at all;
* :class:`PlaintextTooLargeError` - the plaintext expands beyond the limit (a compression bomb);

this machine's or our configuration's (the load fails and is retried, :class:`LocalFault`):

* :class:`BadPassphraseError` - the passphrase in the feed's PGP connection does not unlock its key;
* :class:`LocalWriteError` - the plaintext could not be written (disk full, file size limit);
* :class:`LocalFault` - gpg was killed by someone else (out of memory, a shutdown).

A failed decryption never leaves partial plaintext behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
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
    """Not encrypted to us: every recipient key of the file is one we do not hold."""

    reason = "no_secret_key"


class WrongKeyError(DecryptError):
    """The file names the feed's key as its recipient, but its session key does not decrypt with it."""

    reason = "wrong_key"


class SymmetricOnlyError(DecryptError):
    """Encrypted with a passphrase (symmetric encryption) instead of to the feed's public key."""

    reason = "symmetric_only"


class NotEncryptedError(DecryptError):
    """An OpenPGP message that is not encrypted at all (signed only, or literal data): refused."""

    reason = "not_encrypted"


class PlaintextTooLargeError(DecryptError):
    """The plaintext expands beyond the file's limit (a compression bomb); gpg was stopped there."""

    reason = "too_large"


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


class BadPassphraseError(LocalFault):
    """The feed's private key is there but the passphrase configured for it does not unlock it: our
    configuration's fault, not the delivery's. The load fails (retried, alerted), nothing is quarantined."""

    reason = "bad_passphrase"


class LocalWriteError(LocalFault):
    """The plaintext could not be written to the local work folder (disk full, quota, file size
    limit)."""

    reason = "local_write"


# A decrypted file may be at most this many times its encrypted size, but never less than the floor.
# Real extract CSV compresses 5-15 fold; 100 leaves room for very repetitive tables while a zlib bomb
# (up to ~1000 fold per layer, more when nested) stops early. A feed can change both (config.Feed).
DEFAULT_PLAINTEXT_RATIO = 100
DEFAULT_PLAINTEXT_FLOOR = 64 << 20  # 64 MiB: small files are never refused for their ratio
CHUNK = 1 << 20


def plaintext_limit(encrypted_size: int, *, ratio: float = DEFAULT_PLAINTEXT_RATIO,
                    floor: int = DEFAULT_PLAINTEXT_FLOOR) -> int:
    """The most bytes a file of ``encrypted_size`` bytes may decrypt to."""
    return max(int(floor), int(encrypted_size * ratio))


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

    def key_ids(self) -> frozenset[str]:
        """The long IDs of every key and subkey in this keyring (the feed's own)."""
        ids = set()
        for key in self.gpg.list_keys():
            ids.add(str(key.get("keyid", "")).upper())
            ids.update(str(sub[0]).upper() for sub in key.get("subkeys", []) if sub)
        return frozenset(i for i in ids if i)

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

    def decrypt_file(self, src: Path, dst: Path, *, passphrase: str | None, limit: int | None = None) -> None:
        """Decrypt ``src`` into ``dst`` (streamed), at most ``limit`` bytes of plaintext (default:
        :func:`plaintext_limit` of its size). Raises a :class:`DecryptError` subclass when the file is
        at fault, a :class:`LocalFault` when this machine or our configuration is."""
        _Decryption(self, Path(src), Path(dst), passphrase, limit).run()

    @contextlib.contextmanager
    def decrypting(self, src: Path, dst: Path, *, passphrase: str | None,
                   limit: int | None = None) -> Iterator[PlaintextStream]:
        """Decrypt ``src`` into ``dst`` in the background and read the plaintext while it is written.

        The consumer (the COPY) runs concurrently with gpg instead of after it. Reads raise the
        :class:`DecryptError` if gpg fails, even at the very end (a failed integrity check is only
        known once all data has passed), so a consumer that commits after the last read can never
        commit data from a bad file. When the consumer stops (its COPY failed), gpg is killed and
        reaped at once rather than left decrypting to the end.
        """
        state: dict = {}
        decryption = _Decryption(self, Path(src), Path(dst), passphrase, limit)

        def run() -> None:
            try:
                decryption.run()
            except BaseException as err:
                state["error"] = err

        worker = threading.Thread(target=run, name=f"gpg-decrypt:{Path(src).name}", daemon=True)
        worker.start()
        stream = PlaintextStream(Path(dst), worker, state)
        try:
            yield stream
        finally:
            decryption.stop()  # a no-op once gpg has finished
            worker.join()
            stream.close()


class _Decryption:
    """One ``gpg --decrypt``: gpg writes the plaintext to a pipe and we copy it into ``dst``, at most
    ``limit`` bytes; past it (a compression bomb) or on :meth:`stop` gpg is killed and reaped."""

    def __init__(self, kr: Keyring, src: Path, dst: Path, passphrase: str | None, limit: int | None):
        self.kr, self.src, self.dst, self.passphrase = kr, src, dst, passphrase or ""
        self.limit = plaintext_limit(_size(src)) if limit is None else limit
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stopped = False  # the consumer gave up: we killed gpg
        self._over_limit = False  # the plaintext went past the limit: we killed gpg

    def stop(self) -> None:
        """Kill gpg now (the consumer of the plaintext failed); :meth:`run` then reaps it."""
        with self._lock:
            self._stopped = True
            if self._proc is not None:
                self._proc.kill()  # does nothing once gpg has exited

    def run(self) -> None:
        with self._lock:
            if self._stopped:
                raise LocalFault("decryption was stopped before it started", file=self.src.name)
            self._proc = proc = subprocess.Popen(
                self.kr.gpg.make_args(["--decrypt", "--", str(self.src)], True), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.kr.gpg.env)
        err_out: list[bytes] = []
        reader = threading.Thread(target=lambda: err_out.append(proc.stderr.read()), daemon=True)
        reader.start()
        write_error, finished = None, False
        try:
            self._send_passphrase(proc)
            write_error = self._copy(proc)
            finished = True
        finally:
            if not finished or write_error is not None or self._over_limit:
                proc.kill()
            proc.wait()  # reaped: no gpg is left running, nor a zombie
            reader.join()
            proc.stdout.close()
            proc.stderr.close()
            if not finished:
                _discard(self.dst)
        try:
            self._verdict(proc.returncode, b"".join(err_out).decode(self.kr.gpg.encoding, "replace"), write_error)
        except BaseException:
            _discard(self.dst)
            raise

    def _send_passphrase(self, proc: subprocess.Popen) -> None:
        try:
            proc.stdin.write(self.passphrase.encode(self.kr.gpg.encoding) + b"\n")
            proc.stdin.close()
        except BrokenPipeError:  # gpg ended early (not a PGP file): its report says why
            pass

    def _copy(self, proc: subprocess.Popen) -> OSError | None:
        """gpg's plaintext into ``dst``, never past the limit; returns the local write error, if any."""
        written = 0
        try:
            with open(self.dst, "wb", buffering=0) as out:
                while chunk := proc.stdout.read1(CHUNK):
                    if written + len(chunk) > self.limit:
                        self._over_limit = True
                        return None
                    view = memoryview(chunk)
                    while view:
                        view = view[out.write(view):]
                    written += len(chunk)
        except OSError as err:
            return err
        return None

    def _verdict(self, returncode: int, stderr: str, write_error: OSError | None) -> None:
        """Raise what went wrong, the deliberate kills first (gpg then dies by a signal we sent)."""
        name = self.src.name
        if self._over_limit:
            raise PlaintextTooLargeError(
                f"the file expands beyond {self.limit} bytes when decrypted (it is {_size(self.src)} bytes "
                "encrypted): a compression bomb or a damaged file. gpg was stopped at the limit and nothing of "
                "the file was loaded; the supplier must check and re-send it (if it is genuine, raise the "
                "feed's max_plaintext_ratio or min_plaintext_limit_mb and release the batch)",
                file=name, detail=stderr[-2000:])
        if self._stopped:
            raise LocalFault("decryption stopped: the load of the plaintext failed", file=name)
        if write_error is not None:
            why = write_error.strerror or str(write_error)
            if write_error.errno == errno.EFBIG:
                why = f"the file size limit (ulimit -f) was reached: {why}"
            raise LocalWriteError(
                f"could not write the plaintext to {self.dst.parent} ({why}): a local fault, not the "
                "delivery's; nothing of the file was loaded. Free space there; the load is retried",
                file=name, detail=stderr[-2000:])
        if returncode < 0:
            sig = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else -returncode
            raise LocalFault(f"gpg was stopped by signal {sig} while decrypting: a local fault, not the "
                             "delivery's; nothing of the file was loaded; the load is retried",
                             file=name, detail=stderr[-2000:])
        if not _Status.parse(stderr).decrypted:
            raise classify_failure(stderr, name, src_size=_size(self.src), own_keys=self.kr.key_ids())


def _size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return -1


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


@dataclass(frozen=True)
class _Status:
    """gpg's ``--status-fd`` report of one run: each keyword with the arguments of its lines."""

    lines: dict[str, list[str]]

    @classmethod
    def parse(cls, stderr: str) -> _Status:
        lines: dict[str, list[str]] = {}
        for line in stderr.splitlines():
            if line.startswith("[GNUPG:] "):
                keyword, _, args = line[9:].partition(" ")
                lines.setdefault(keyword, []).append(args)
        return cls(lines)

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.lines

    def key_ids(self, keyword: str) -> set[str]:
        return {a.split()[0] for a in self.lines.get(keyword, []) if a.split()}

    def error_codes(self, location: str) -> set[int]:
        """gpg-error codes (without their source) of ``ERROR <location> <code>`` lines."""
        codes = set()
        for args in self.lines.get("ERROR", []):
            where, _, code = args.partition(" ")
            if where == location and code.strip().isdigit():
                codes.add(int(code) & 0xFFFF)
        return codes

    @property
    def decrypted(self) -> bool:
        """Decrypted with one of our keys, completely, integrity checked."""
        return ("DECRYPTION_OKAY" in self and "DECRYPTION_KEY" in self
                and not {"BADMDC", "DECRYPTION_FAILED"} & self.lines.keys())


_GPG_ERR_BAD_PASSPHRASE = 11
_SIGNATURE = ("NEWSIG", "GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "VALIDSIG")
_RESEND = "the supplier must re-send it encrypted to the feed's public key"


def classify_failure(stderr: str, name: str, *, src_size: int = -1,
                     own_keys: frozenset[str] = frozenset()) -> DecryptError | LocalFault:
    """Turn gpg's status report into one specific error saying whose fault it is: what the message
    is (not PGP, not encrypted, symmetric, for other keys), then whether our key opens it, then its data.
    ``own_keys``: the key IDs in our keyring (a recipient that is one of them and yet "has no secret
    key" means our keyring or gpg's agent failed here: a local fault, not the delivery's)."""
    st = _Status.parse(stderr)
    detail = "\n".join(line for line in stderr.splitlines() if "KEY_CONSIDERED" not in line)[-2000:]
    local = _our_side_failed(st, stderr, own_keys)
    if local is not None:
        return LocalFault(local, file=name, detail=detail)
    for check in (_not_a_message, _not_for_us, _key_failed, _data_failed):
        found = check(st, stderr, src_size)
        if found is not None:
            cls, message = found
            return cls(message, file=name, detail=detail)
    last = detail.splitlines()[-1] if detail else "unknown error"
    return DecryptError(f"decryption failed: {last}", file=name, detail=detail)


# gpg's own words when it cannot reach or use its agent (where the secret keys live)
_AGENT_TROUBLE = ("can't connect to the agent", "no agent running", "problem with the agent",
                  "error running '/usr/bin/gpg-agent'", "gpg-agent is not available")


def _our_side_failed(st: _Status, stderr: str, own_keys: frozenset[str]) -> str | None:
    """Why this machine, not the file, failed: gpg could not reach its agent, or our own key (which
    the file names) was reported as having no secret key."""
    text = stderr.lower()
    if any(t in text for t in _AGENT_TROUBLE):
        return ("gpg could not reach its agent, which holds the feed's private key: a local fault, not the "
                "delivery's (check the temporary folder and the gpg installation); the load is retried")
    missing = {k[-16:] for k in st.key_ids("NO_SECKEY")} & {k[-16:] for k in own_keys}
    if missing:
        return (f"the file is encrypted to the feed's own key ID {', '.join(sorted(missing))}, but gpg could not use "
                "its private key here (the keyring or gpg's agent failed): a local fault, not the delivery's; "
                "the load is retried")
    return None


def _not_a_message(st: _Status, stderr: str, src_size: int):
    """Empty, not OpenPGP, or an OpenPGP message without any encryption."""
    if src_size == 0:
        return NotPgpError, "the file is empty (0 bytes): nothing to decrypt; the supplier must re-send it"
    if not {"ENC_TO", "NEED_PASSPHRASE_SYM", "PLAINTEXT", "BEGIN_DECRYPTION"} & st.lines.keys():
        cut = " (or one cut off inside its first packet)" if "3" in st.lines.get("NODATA", []) else ""
        return NotPgpError, (f"this is not an OpenPGP message{cut}: no encrypted data found; the supplier must "
                             "re-send the file encrypted to the feed's public key")
    if "PLAINTEXT" in st and "BEGIN_DECRYPTION" not in st:
        what = ("signed but not encrypted (a signed-only OpenPGP message)" if any(k in st for k in _SIGNATURE)
                else "literal data, not encrypted (an OpenPGP message holding plain text)")
        return NotEncryptedError, (f"not encrypted: the file is {what}. IM1 files must be encrypted to the feed's "
                                   f"key, so it is refused and not loaded; {_RESEND}")
    return None


def _not_for_us(st: _Status, stderr: str, src_size: int):
    """Encrypted, but not to any key of ours."""
    if "ENC_TO" not in st and "NEED_PASSPHRASE_SYM" in st:
        return SymmetricOnlyError, ("encrypted with a passphrase only (symmetric encryption), not to the feed's "
                                    f"public key: the supplier's encryption settings are wrong; {_RESEND}")
    recipients = st.key_ids("ENC_TO")
    if recipients and not recipients - st.key_ids("NO_SECKEY"):
        ids = ", ".join(sorted(recipients))
        return NoSecretKeyError, (f"no secret key: not encrypted to the feed's key: the file is encrypted only to key ID {ids}, "
                                  "which the feed's private key does not include (the supplier used another or an old "
                                  f"public key, or the feed's PGP connection holds the wrong private key); {_RESEND}")
    return None


def _key_failed(st: _Status, stderr: str, src_size: int):
    """Encrypted to our key, which did not open it: its passphrase (ours to fix) or a forged key packet."""
    ours = st.key_ids("ENC_TO") - st.key_ids("NO_SECKEY")
    if not ours or "DECRYPTION_KEY" in st:
        return None
    if (_GPG_ERR_BAD_PASSPHRASE in st.error_codes("pkdecrypt_failed") or "BAD_PASSPHRASE" in st
            or "Bad passphrase" in stderr):
        return BadPassphraseError, ("bad passphrase: the feed's private key is there but the passphrase in the "
                                    "feed's PGP connection does not unlock it. Our configuration, not the delivery: "
                                    "fix the passphrase; the load is retried and the delivery is not quarantined")
    ids = ", ".join(sorted(ours))
    return WrongKeyError, (f"wrong key: the file names the feed's key ID {ids} as its recipient, but its session key "
                           "does not decrypt with that key (encrypted with another key claiming this ID, or the key "
                           f"packet is damaged); {_RESEND}")


def _data_failed(st: _Status, stderr: str, src_size: int):
    """Opened with our key; the encrypted data then ends early or fails its integrity check."""
    if "read error" in stderr or "pending bytes" in stderr or "unexpected EOF" in stderr.lower():
        return TruncatedInputError, ("truncated input: the encrypted file ends early (incomplete download or "
                                     "upload); fetch it again, or the supplier must re-send it")
    if "BADMDC" in st or "manipulated" in stderr or "invalid packet" in stderr or "CRC error" in stderr:
        return IntegrityError, ("integrity check failed: the ciphertext has been altered or corrupted; do not use "
                                "this file; the supplier must re-send it")
    if "NODATA" in st:
        return TruncatedInputError, "truncated input: no complete encrypted packet could be read; fetch it again"
    return None


@contextlib.contextmanager
def keyring_with(secret_armored: str, passphrase: str | None):
    """A throw-away keyring holding one private key (from a connection or the environment)."""
    with Keyring() as kr:
        kr.import_key(secret_armored, passphrase)
        yield kr
