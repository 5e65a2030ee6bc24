"""Credentials the ingest needs, as plain values (no Airflow import).

The Airflow adapter (:mod:`im1.airflow.connections`) builds these from connections; the CLI and
tests build them directly. Nothing here is ever logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PgpKey:
    secret_armored: str = field(repr=False)
    passphrase: str | None = field(default=None, repr=False)

    @classmethod
    def from_values(
        cls,
        *,
        private_key: str | None = None,
        private_key_file: str | None = None,
        private_key_env: str | None = None,
        passphrase: str | None = None,
        passphrase_env: str | None = None,
    ) -> PgpKey:
        """Key text given inline, in a file, or in an environment variable (first one set wins)."""
        text = private_key
        if not text and private_key_file:
            p = Path(private_key_file)
            if not p.exists():
                raise ValueError(f"PGP private key file {p} does not exist")
            text = p.read_text()
        if not text and private_key_env:
            text = os.environ.get(private_key_env)
            if not text:
                raise ValueError(f"environment variable {private_key_env} (PGP private key) is not set")
        if not text or "PGP PRIVATE KEY BLOCK" not in text:
            raise ValueError("no PGP private key configured (private_key, private_key_file or private_key_env)")
        if passphrase_env and not passphrase:
            passphrase = os.environ.get(passphrase_env)
        return cls(secret_armored=text, passphrase=passphrase)
