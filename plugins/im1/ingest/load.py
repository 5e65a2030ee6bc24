"""Stage plaintext extract files into raw tables with PostgreSQL COPY, streamed.

The file's bytes go to the server unchanged (``COPY ... FROM STDIN (FORMAT csv, HEADER)``), so
RFC 4180 quoting, embedded commas and newlines are parsed by PostgreSQL itself and no row is
touched in Python. Columns are mapped by *header name*; metadata columns are filled from
per-load session settings by their defaults (see :mod:`im1.warehouse.bootstrap`).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from im1 import specs
from im1.warehouse.bootstrap import META_NAMES, add_column

log = logging.getLogger(__name__)

CHUNK = 1 << 20
ROW_SEQ = "pg_temp.im1_rownum"


class HeaderError(ValueError):
    """The file's header row cannot be mapped onto the raw table."""


class FileFormatError(ValueError):
    """The file is not what the supplier promises: not valid in its encoding, or not RFC 4180 CSV."""


class Cp1252Reader:
    """A Windows-1252 stream read as UTF-8 for COPY, checked on the way (TPP files are "ANSI").

    ``read(n)`` reads ``n`` bytes of the file, decodes them strictly as Windows-1252 (a byte the
    code page does not define, e.g. 0x81, stops the load naming its offset and line) and returns
    them as UTF-8. Nothing is buffered beyond one chunk, so memory does not grow with the file.

    RFC 4180 strictness: PostgreSQL's CSV parser refuses unterminated quoted fields, rows with
    too many or too few fields and mixed line ends; what it would silently accept is a quote that
    is neither at a field boundary nor doubled (``O"Brien`` in an unquoted field, ``"ab"cd``). Such
    a quote always has a character other than a quote, comma or line end on *both* sides, which a
    regular expression finds at C speed; it is refused here, naming the line.
    """

    # the quote first (a literal: the engine jumps from quote to quote), then its neighbours
    _STRAY_QUOTE = re.compile(r'"(?<=[^,\n"]")(?=[^,\r\n"])')

    def __init__(self, raw, name: str = "file"):
        self.raw = raw
        self.name = name
        self._decoder = codecs.getincrementaldecoder("cp1252")(errors="strict")
        self._offset = 0  # bytes of the file consumed
        self._newlines = 0  # line feeds before the carried text
        self._carry = ""  # the last characters of the previous chunk (a quote there is checked next time)
        self._done = False

    def read(self, n: int = CHUNK) -> bytes:
        while not self._done:
            data = self.raw.read(n)
            if self._offset == 0 and data.startswith(codecs.BOM_UTF8):
                raise FileFormatError(f"{self.name}: starts with a UTF-8 byte-order mark, but TPP files are "
                                      "Windows-1252; refusing to guess the encoding")
            try:
                text = self._decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                line = self._newlines + self._carry.count("\n") + data[: err.start].count(b"\n") + 1
                raise FileFormatError(
                    f"{self.name}: byte 0x{data[err.start]:02X} at offset {self._offset + err.start} (line {line}) "
                    "is not a Windows-1252 character") from None
            self._offset += len(data)
            if not data:
                self._done = True
            buf = self._carry + text
            m = self._STRAY_QUOTE.search(buf)
            if m:
                line = self._newlines + buf.count("\n", 0, m.start()) + 1
                raise FileFormatError(f"{self.name}: line {line} is not valid RFC 4180 CSV: a double quote inside "
                                      "a field that is neither doubled nor at the start or end of a quoted field")
            keep = min(2, len(buf))
            self._newlines += buf.count("\n", 0, len(buf) - keep)
            self._carry = buf[len(buf) - keep:]
            if text:
                return text.encode("utf-8")
        return b""


@dataclass
class StagedFile:
    table: str  # extract table name, e.g. "Admin_Patient" or "SRPatient"
    path: Path  # plaintext CSV
    file_id: int
    encoding: str = "UTF8"  # PostgreSQL encoding name: UTF8 (EMIS) or WIN1252 (TPP)
    header: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    plain_sha256: str | None = None  # of the bytes COPY was given (set by copy_stream)


def parse_header(head: bytes, encoding: str = "UTF8", name: str = "file") -> list[str]:
    """The first CSV record (RFC 4180) of ``head`` (the file's first bytes), without a UTF-8 BOM."""
    py_enc = {"UTF8": "utf-8-sig", "WIN1252": "cp1252"}.get(encoding, encoding)
    if not head:
        raise HeaderError(f"{name}: the file is empty (not even a header row)")
    try:
        text = codecs.decode(head, py_enc, errors="strict")
    except UnicodeDecodeError as err:
        raise HeaderError(f"{name}: header row is not valid {encoding}: {err.reason} at byte {err.start}") from None
    try:
        row = next(csv.reader(io.StringIO(text, newline=""), strict=True))
    except (csv.Error, StopIteration) as err:
        raise HeaderError(f"{name}: header row is not valid CSV: {err}") from None
    if not row or all(not c.strip() for c in row):
        raise HeaderError(f"{name}: header row is empty")
    return [c.strip() for c in row]


def read_head(reader, limit: int = 1 << 16) -> bytes:
    """Read from ``reader`` until the first line is complete (or ``limit`` bytes / end of file)."""
    head = b""
    while b"\n" not in head and len(head) < limit:
        chunk = reader.read(limit)
        if not chunk:
            break
        head += chunk
    return head


def read_header(path: Path, encoding: str = "UTF8") -> list[str]:
    with open(path, "rb") as fh:
        return parse_header(read_head(fh), encoding, path.name)


PG_MAX_COLUMNS = 1600  # columns a PostgreSQL table can have
PG_NAME_BYTES = 63  # PostgreSQL cuts longer identifiers to this many bytes (NAMEDATALEN - 1)


# PostgreSQL's system columns: a table cannot have a column of that name (error 42701, no retry fixes it)
SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})


def pg_column_name(column: str) -> str:
    """The name PostgreSQL keeps for a header column's raw column (cut to 63 bytes, whole characters)."""
    return specs.raw_column_name(column).encode()[:PG_NAME_BYTES].decode("utf-8", "ignore")


def check_header(table: str, header: list[str], known_columns: list[str], file_name: str) -> list[str]:
    """Validate a header against the raw table's known columns; returns the unknown columns.

    A header no retry could ever load raises :class:`HeaderError` (the batch is quarantined at once),
    naming the problem and the column's position, never a name that could be data."""
    _check_names(header, file_name)
    _check_is_header(table, header, known_columns, file_name)
    raw = [specs.raw_column_name(h) for h in header]
    dupes = sorted({h for h in raw if raw.count(h) > 1})
    if dupes:
        raise HeaderError(f"{file_name}: column(s) {', '.join(dupes)} appear more than once in the header")
    _check_truncation(header, file_name)
    clash = sorted(set(raw) & (set(META_NAMES) | SYSTEM_COLUMNS))
    if clash:
        raise HeaderError(f"{file_name}: header uses reserved column name(s) {', '.join(clash)} (the platform's "
                          "metadata or PostgreSQL's system columns)")
    _check_width(header, known_columns, file_name)
    known = {pg_column_name(c) for c in known_columns}  # compared as PostgreSQL keeps names (63 bytes)
    return [h for h in header if pg_column_name(h) not in known]


def _check_names(header: list[str], file_name: str) -> None:
    empty = [str(i) for i, h in enumerate(header, 1) if not h.strip()]
    if empty:
        raise HeaderError(f"{file_name}: header column(s) {', '.join(empty)} (of {len(header)}) ha{'s' if len(empty) == 1 else 've'} "
                          "no name (an empty name, e.g. a trailing comma): a column without a name cannot be loaded")


def _check_is_header(table: str, header: list[str], known_columns: list[str], file_name: str) -> None:
    """A first line that shares no name with the table's columns is not this table's header: the
    header row is missing (the line is data) or the file is another table's. Never shown: it may be
    a patient's record, and its values must not become column names either."""
    known = {specs.raw_column_name(c) for c in known_columns} - set(META_NAMES)
    if known and not any(specs.raw_column_name(h) in known for h in header):
        raise HeaderError(f"{file_name}: none of the {len(header)} fields of the first line is a column of {table}: "
                          "the header row is missing, or the file is another table's; nothing was loaded (the "
                          "line is not shown: it may be data)")


def _check_truncation(header: list[str], file_name: str) -> None:
    first: dict[str, int] = {}
    for i, h in enumerate(header, 1):
        j = first.setdefault(pg_column_name(h), i)
        if j != i:
            raise HeaderError(f"{file_name}: header columns {j} and {i} have different names that are the same in "
                              f"their first {PG_NAME_BYTES} bytes, where PostgreSQL cuts column names: they cannot "
                              "be loaded as two columns")


def _check_width(header: list[str], known_columns: list[str], file_name: str) -> None:
    names = {pg_column_name(c) for c in known_columns}
    for i, h in enumerate(header, 1):
        names.add(pg_column_name(h))
        if len(names) > PG_MAX_COLUMNS:
            raise HeaderError(f"{file_name}: the header has {len(header)} columns; with the raw table's own columns "
                              f"column {i} is past the limit: PostgreSQL allows at most {PG_MAX_COLUMNS} columns "
                              "in a table")


def _raw_columns(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "select column_name from information_schema.columns where table_schema = %s and table_name = %s",
        (schema, table),
    ).fetchall()
    if not rows:
        raise HeaderError(f"raw table {schema}.{table} does not exist (run `im1 warehouse bootstrap`)")
    return [r[0] for r in rows]


def set_load_context(conn: psycopg.Connection, *, feed_id: str, organisation: str | None, batch_id: int) -> None:
    """Session settings read by the raw tables' metadata defaults (transaction-local)."""
    conn.execute("select set_config('im1.feed_id', %s, true)", (feed_id,))
    conn.execute("select set_config('im1.organisation', %s, true)", (organisation or "",))
    conn.execute("select set_config('im1.batch_id', %s, true)", (str(batch_id),))
    # a session-local sequence numbers the rows of each file (reset per file); the cache keeps
    # nextval cheap and, being this session's alone, the numbers stay contiguous
    conn.execute(f"create temp sequence if not exists {ROW_SEQ.split('.')[1]} cache 10000")
    conn.execute("select set_config('im1.row_seq', %s, true)", (ROW_SEQ,))


def claim_load_seq(conn: psycopg.Connection, schema: str, table: str) -> int:
    """Serialise writers of one table for the rest of the transaction and number this write.

    ``SHARE ROW EXCLUSIVE`` conflicts with itself (and with row changes), not with readers, so
    dbt keeps reading while we load; and because the number is drawn *after* the lock, per table
    a higher ``_load_seq`` always commits later. Incremental models can then take
    ``_load_seq > max(seen)`` as "new" without missing a batch that was still in flight. Tables
    are always taken in the same (sorted) order, so two loads cannot deadlock.
    """
    conn.execute(sql.SQL("lock table {} in share row exclusive mode").format(sql.Identifier(schema, table)))
    seq = conn.execute("select nextval('ingest.load_seq')").fetchone()[0]
    conn.execute("select set_config('im1.load_seq', %s, true)", (str(seq),))
    return int(seq)


def copy_stream(conn: psycopg.Connection, schema: str, f: StagedFile, reader, head: bytes | None = None) -> int:
    """COPY one plaintext stream into ``schema.<table>``; returns rows loaded.

    ``reader`` is any object with ``read(n)`` (a file, or a stream still being decrypted); ``head``
    is data already read from it (used for the header). Runs in the caller's transaction.
    """
    t0 = time.monotonic()
    raw_table = specs.raw_table_name(f.table)
    if head is None:
        head = read_head(reader)
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8) :]
    f.header = parse_header(head, f.encoding, f.path.name)
    existing = _raw_columns(conn, schema, raw_table)
    f.unknown_columns = check_header(f.table, f.header, existing, f.path.name)
    for col in f.unknown_columns:
        # keep unknown columns: schema drift is normal, and the data is not ours to drop
        add_column(conn, schema, raw_table, pg_column_name(col))
    conn.execute("select set_config('im1.file_id', %s, true)", (str(f.file_id),))
    conn.execute("select setval(%s::regclass, 1, false)", (ROW_SEQ,))
    claim_load_seq(conn, schema, raw_table)
    stmt = sql.SQL("copy {} ({}) from stdin (format csv, header true, encoding {})").format(
        sql.Identifier(schema, raw_table),
        sql.SQL(", ").join(sql.Identifier(specs.raw_column_name(h)) for h in f.header),
        sql.Literal(f.encoding),
    )
    digest = hashlib.sha256()  # the plaintext's hash, taken on the way (duplicate detection by content)
    with conn.cursor() as cur:
        with cur.copy(stmt) as cp:
            cp.write(head)
            digest.update(head)
            while chunk := reader.read(CHUNK):
                cp.write(chunk)
                digest.update(chunk)
        f.rows = cur.rowcount
    f.plain_sha256 = digest.hexdigest()
    f.seconds = time.monotonic() - t0
    log.info("copied %s: %d rows in %.2fs", f.path.name, f.rows, f.seconds)
    return f.rows


def copy_file(conn: psycopg.Connection, schema: str, f: StagedFile) -> int:
    """COPY one plaintext file (see :func:`copy_stream`)."""
    with open(f.path, "rb") as fh:
        return copy_stream(conn, schema, f, fh)
