"""The pseudonymisation key's hand-over to dbt: ``person_key`` = HMAC-SHA256(key, NHS number).

The key never appears in SQL text (compiled SQL, manifest, logs, the docs site): it reaches every
new PostgreSQL session of dbt as the setting ``im1.pseudonym_key`` through ``PGOPTIONS``, which
dbt's person_key macro reads with ``current_setting``.
"""

from __future__ import annotations

import re

PSEUDONYM_KEY_ENV = "IM1_PSEUDONYM_KEY"
PSEUDONYM_SETTING = "im1.pseudonym_key"  # the PostgreSQL session setting dbt's person_key macro reads


def pgoptions_with_key(key: str, existing: str = "") -> str:
    """``PGOPTIONS`` that hands the key to every new PostgreSQL session as ``im1.pseudonym_key``.

    libpq option values escape spaces and backslashes; an earlier key in ``existing`` is replaced.
    """
    kept = re.sub(r"\s*-c\s*" + re.escape(PSEUDONYM_SETTING) + r"=(\\.|\S)*", "", existing or "").strip()
    value = key.replace("\\", "\\\\").replace(" ", "\\ ")
    return f"{kept} -c {PSEUDONYM_SETTING}={value}".strip()
