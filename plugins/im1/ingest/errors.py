"""How the ingest tells a bad delivery from a fault that a retry may cure."""

from __future__ import annotations

import re

import psycopg

from im1.crypto import DecryptError
from im1.ingest.load import FileFormatError, HeaderError
from im1.transport.sftp import RefusedFileError


class QuarantineError(RuntimeError):
    """The batch cannot be loaded as delivered; it is quarantined with this reason."""


# failures that mean "this delivery is bad as delivered": quarantine, do not retry. A crypto.LocalFault
# (this machine, or our configuration such as a wrong passphrase for the feed's key) is not one: the
# load fails and is retried.
QUARANTINE_ERRORS = (DecryptError, HeaderError, FileFormatError, QuarantineError, psycopg.errors.DataError,
                     RefusedFileError)

_COPY_LINE = re.compile(r"\bline (\d+)")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def database_error(err: psycopg.Error) -> str:
    """A database error's primary message with every quoted literal blanked: its DETAIL and CONTEXT
    (e.g. ``COPY t, line 3: "<the whole row>"``) and literals such as ``invalid input ...: "<value>"``
    may quote patient data."""
    primary = err.diag.message_primary or (str(err).splitlines() or [""])[0]
    return _QUOTED.sub("'…'", primary)


def safe_text(err: BaseException) -> str:
    """What may be written about ``err`` in the ledger, an event or a log line: a database error
    without the data it quotes; anything else as it is (our own messages never carry row values)."""
    if isinstance(err, psycopg.Error) and _quotes(err):
        return f"{type(err).__name__}: {database_error(err)}"
    return str(err)


def _quotes(err: psycopg.Error) -> bool:
    """The database error quotes something that may be data: a DETAIL, a CONTEXT (such as the COPY
    line), or a quoted literal in its message. A lost connection, say, quotes nothing."""
    d = err.diag
    return bool(d.message_detail or d.context or _QUOTED.search(d.message_primary or ""))


def carries_data(err: BaseException | None) -> bool:
    """True when ``err`` or an error it was raised from is a database error that quotes something (a
    DETAIL, a CONTEXT such as the COPY line, a quoted literal: it may be a row): such a chain is not
    re-raised as a cause, so no traceback prints it. A lost connection quotes nothing."""
    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, psycopg.Error) and _quotes(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def copy_error(err: psycopg.Error) -> str:
    """PostgreSQL's COPY error without the offending row's content (it may hold patient data)."""
    diag = err.diag
    msg = database_error(err)
    line = _COPY_LINE.search(diag.context or "")
    where = f" at line {line.group(1)} of the file (counting the header as line 1)" if line else ""
    return f"the file is not valid CSV for PostgreSQL COPY: {msg}{where}"
