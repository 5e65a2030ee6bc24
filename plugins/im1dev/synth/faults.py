"""Break an already-published synthetic EMIS batch in the ways real deliveries break.

Every helper works on a batch folder as :func:`im1dev.synth.emis.write_batch` leaves it (one
``*.csv.gpg`` per table under ``{feed folder}/{yyyyMMdd}/``), changes it in place, and returns a
:class:`Fault` saying exactly what it changed. Helpers that must change the plaintext (an extra
column, a malformed row) decrypt with the consumer's key and re-encrypt to the same recipient,
in a private temporary folder; plaintext never lands in the served tree.

Faults: :func:`truncate`, :func:`encrypt_to_wrong_key`, :func:`tamper`, :func:`remove_table`,
:func:`add_unknown_column`, :func:`malform_row`, :func:`edit_header`, :func:`duplicate_delivery`, and
:func:`publish_v80` (a whole batch in spec v8.0).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from im1 import emis, specs
from im1.crypto import KeyPair, Keyring


@dataclass(frozen=True)
class Fault:
    kind: str
    files: list[Path]  # files changed, added or removed
    detail: str
    extra: dict = field(default_factory=dict, hash=False)


def table_file(folder: Path, table: str) -> Path:
    """The batch file of ``table`` in a published batch folder."""
    for p in sorted(folder.iterdir()):
        try:
            if emis.parse_name(p.name).table == table:
                return p
        except emis.FileNameError:
            continue
    raise FileNotFoundError(f"no {table} file in {folder}")


def truncate(folder: Path, table: str, *, keep: float = 0.5) -> Fault:
    """Cut the encrypted file short (a partial upload): keep the first ``keep`` fraction of its bytes."""
    p = table_file(folder, table)
    data = p.read_bytes()
    n = max(1, int(len(data) * keep))
    p.write_bytes(data[:n])
    return Fault("truncated", [p], f"{p.name}: {len(data)} -> {n} bytes", {"old_size": len(data), "new_size": n})


def tamper(folder: Path, table: str, *, offset: int | None = None) -> Fault:
    """Flip bits in the ciphertext (by default near the end, inside the encrypted data)."""
    p = table_file(folder, table)
    data = bytearray(p.read_bytes())
    at = offset if offset is not None else len(data) - 10
    data[at] ^= 0x55
    p.write_bytes(bytes(data))
    return Fault("tampered", [p], f"{p.name}: byte {at} of {len(data)} flipped", {"offset": at})


def encrypt_to_wrong_key(folder: Path, table: str, *, wrong: KeyPair | None = None) -> Fault:
    """Replace the file with a well-formed one encrypted to a key the consumer does not hold.

    The content is the table's header from the spec (the consumer cannot read it anyway). A
    throw-away key pair is generated unless ``wrong`` (with its public key) is given.
    """
    p = table_file(folder, table)
    cols = specs.emis_table(table).column_names()
    with Keyring() as kr, tempfile.TemporaryDirectory(prefix="im1-fault-") as tmp:
        if wrong is None:
            wrong = kr.generate("Not the consumer", "not-the-consumer@example.invalid", "wrong-key")
        else:
            kr.import_key(wrong.public_armored)
        plain = Path(tmp) / "plain.csv"
        buf = io.StringIO()
        csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerow(cols)
        plain.write_text(buf.getvalue(), encoding="utf-8")
        tmp_out = p.with_name(p.name + ".tmp")
        kr.encrypt_file(plain, tmp_out, wrong.fingerprint)
        tmp_out.replace(p)
    return Fault("wrong_key", [p], f"{p.name}: re-encrypted to key {wrong.fingerprint[-16:]}",
                 {"fingerprint": wrong.fingerprint})


def remove_table(folder: Path, table: str) -> Fault:
    """Delete one table's file (a batch that never becomes complete)."""
    p = table_file(folder, table)
    p.unlink()
    return Fault("missing_table", [p], f"{p.name} removed", {"table": table})


def _rewrite(folder: Path, table: str, keys: KeyPair, edit: Callable[[bytes], bytes]) -> Path:
    """Decrypt a batch file with the consumer's key, edit the plaintext, re-encrypt to the same key."""
    p = table_file(folder, table)
    with Keyring() as kr, tempfile.TemporaryDirectory(prefix="im1-fault-") as tmp:
        kr.import_key(keys.secret_armored, keys.passphrase)
        plain = Path(tmp) / "plain.csv"
        kr.decrypt_file(p, plain, passphrase=keys.passphrase)
        plain.write_bytes(edit(plain.read_bytes()))
        tmp_out = p.with_name(p.name + ".tmp")
        kr.encrypt_file(plain, tmp_out, keys.fingerprint)
        tmp_out.replace(p)
    return p


def add_unknown_column(folder: Path, table: str, keys: KeyPair, *, column: str = "SupplierNewColumn",
                       value: Callable[[int], str] | str = "x") -> Fault:
    """Append a column the spec does not know (schema drift), with a value on every row."""
    rows_seen: list[int] = []

    def edit(data: bytes) -> bytes:
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        out = io.StringIO()
        w = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        for i, row in enumerate(reader):
            if i == 0:
                w.writerow([*row, column])
            else:
                w.writerow([*row, value(i) if callable(value) else value])
                rows_seen.append(i)
        return out.getvalue().encode("utf-8")

    p = _rewrite(folder, table, keys, edit)
    return Fault("unknown_column", [p], f"{p.name}: column {column!r} added to {len(rows_seen)} row(s)",
                 {"column": column, "rows": len(rows_seen)})


def malform_row(folder: Path, table: str, keys: KeyPair, *, row: int = 1) -> Fault:
    """Break one data row: its last field loses its closing quote (an unterminated quoted field).

    PostgreSQL's CSV parser then reads on into the following lines and the file cannot be loaded.
    """

    def edit(data: bytes) -> bytes:
        lines = data.split(b"\r\n")
        if len(lines) <= row + 1 or not lines[row]:
            lines.insert(row, b'"{00000000-0000-0000-0000-000000000000}","unterminated')
        else:
            assert lines[row].endswith(b'"'), "expected a fully quoted EMIS row"
            lines[row] = lines[row][:-1]
        return b"\r\n".join(lines)

    p = _rewrite(folder, table, keys, edit)
    return Fault("malformed_row", [p], f"{p.name}: data row {row} has an unterminated quoted field", {"row": row})


def edit_header(folder: Path, table: str, keys: KeyPair, edit: Callable[[bytes], bytes], *, what: str) -> Fault:
    """Rewrite the header row (its raw bytes, without the line end); the data rows are kept as they are."""

    def change(data: bytes) -> bytes:
        header, sep, rows = data.partition(b"\r\n")
        return edit(header) + sep + rows

    p = _rewrite(folder, table, keys, change)
    return Fault("header", [p], f"{p.name}: header {what}", {"what": what})


def extra_field(folder: Path, table: str, keys: KeyPair, *, row: int = 1) -> Fault:
    """Give one data row a field more than the header (PostgreSQL: "extra data after last expected
    column", whose CONTEXT quotes the whole row). ``extra["row_fields"]`` are that row's values."""
    fields: list[str] = []

    def edit(data: bytes) -> bytes:
        lines = data.split(b"\r\n")
        fields.extend(next(csv.reader(io.StringIO(lines[row].decode("utf-8"), newline=""))))
        lines[row] += b',"surplus"'
        return b"\r\n".join(lines)

    p = _rewrite(folder, table, keys, edit)
    return Fault("extra_field", [p], f"{p.name}: data row {row} has a field more than the header",
                 {"row": row, "row_fields": fields})


def drop_header(folder: Path, table: str, keys: KeyPair) -> Fault:
    """Deliver the table without its header row: the first line is then a record."""
    first: list[str] = []

    def headless(data: bytes) -> bytes:
        rows = data.partition(b"\r\n")[2]
        first.extend(next(csv.reader(io.StringIO(rows.decode("utf-8"), newline=""))))
        return rows

    p = _rewrite(folder, table, keys, headless)
    # the fields of the record that now stands where the header was (a test checks none is shown)
    return Fault("header", [p], f"{p.name}: no header row", {"what": "missing", "first_line": first})


def duplicate_delivery(folder: Path, *, into: str | None = None) -> Fault:
    """Deliver the same batch again, in another date folder next to it (a supplier re-send)."""
    target = folder.parent / (into or f"{folder.name}_resend")
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for p in sorted(folder.glob("*.csv.gpg")):
        shutil.copy2(p, target / p.name)
        copied.append(target / p.name)
    return Fault("duplicate_delivery", copied, f"{len(copied)} file(s) delivered again in {target.name}/",
                 {"folder": str(target)})


def publish_v80(world, feed_dir: Path, *, on: dt.date, extract_ts: dt.datetime, batch_number: int,
                keyring: Keyring, recipient: str, export_type: str = "bulk") -> Fault:
    """Publish a whole batch in spec v8.0 (``write_batch(version="8.0")``): no 8.2-only columns."""
    from im1dev.synth import emis as synth_emis

    files = synth_emis.write_batch(world, synth_emis.snapshot(world, on), feed_dir, extract_ts=extract_ts,
                                   batch_number=batch_number, export_type=export_type, keyring=keyring,
                                   recipient=recipient, version="8.0")
    dropped = sorted(set(specs.emis_table("Appointment_Slot").column_names("8.2"))
                     - set(specs.emis_table("Appointment_Slot").column_names("8.0")))
    return Fault("v8.0", files, f"{len(files)} file(s) written with the v8.0 columns "
                 f"(e.g. Appointment_Slot without {', '.join(dropped)})", {"version": "8.0"})
