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


def copy_error(err: psycopg.Error) -> str:
    """PostgreSQL's COPY error without the offending row's content (it may hold patient data)."""
    diag = err.diag
    msg = diag.message_primary or str(err).splitlines()[0]
    line = _COPY_LINE.search(diag.context or "")
    where = f" at line {line.group(1)} of the file (counting the header as line 1)" if line else ""
    return f"the file is not valid CSV for PostgreSQL COPY: {msg}{where}"
