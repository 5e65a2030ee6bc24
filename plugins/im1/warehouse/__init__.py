"""The PostgreSQL warehouse: where it is, who connects as which role, and how it is bootstrapped.

A deployment names its server with ``IM1_WAREHOUSE_URL``; the URL's user must be allowed to
create schemas and roles (bootstrap). Local runs without it use an embedded PostgreSQL, which the
development tooling starts (:mod:`im1dev.runtime`) and passes in as a URL. Role passwords for a real server come from
``IM1_LOADER_PASSWORD``, ``IM1_TRANSFORMER_PASSWORD``, ``IM1_BI_READER_PASSWORD`` and
``IM1_MART_READER_PASSWORD``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

WAREHOUSE_DB = "im1"
AIRFLOW_DB = "airflow"

# Roles (see bootstrap.py for what each may do)
LOADER = "loader"
TRANSFORMER = "transformer"
BI_READER = "bi_reader"  # BI tools: the published (small-number suppressed) schema only
MART_READER = "mart_reader"  # restricted analysts: the unsuppressed marts and published
ROLES = (LOADER, TRANSFORMER, BI_READER, MART_READER)
# NOLOGIN: owns raw and the ingest ledger, so the loader (not a member) can write their rows but
# cannot attach code (row-security policies, triggers, defaults) that would run as whoever reads them
OWNER = "im1_owner"

# Airflow connection ids the DAGs use for the warehouse
CONN_LOADER = "im1_warehouse_loader"
CONN_TRANSFORMER = "im1_warehouse_transformer"
CONN_BI = "im1_warehouse_bi"
CONN_MART_READER = "im1_warehouse_mart_reader"


@dataclass(frozen=True)
class Warehouse:
    """How to reach the warehouse database as the admin (bootstrap) user and as each role."""

    admin_url: str  # a URL whose user may create schemas/roles; its path names the warehouse database
    embedded: bool = False

    @property
    def database(self) -> str:
        return urlsplit(self.admin_url).path.lstrip("/") or WAREHOUSE_DB

    @property
    def host(self) -> str:
        return urlsplit(self.admin_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.admin_url).port or 5432

    def url_for(self, database: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))

    def role_password(self, role: str) -> str | None:
        return os.environ.get(f"IM1_{role.upper()}_PASSWORD")

    def role_url(self, role: str) -> str:
        parts = urlsplit(self.admin_url)
        pw = self.role_password(role)
        auth = quote(role) + (f":{quote(pw, safe='')}" if pw else "")
        netloc = f"{auth}@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def airflow_conn_uri(self, role: str) -> str:
        """An Airflow connection URI (``postgres://``) for a role. Cosmos insists on a password, so a
        placeholder stands in where the server trusts loopback (the embedded one does)."""
        pw = self.role_password(role) or "trust"
        return f"postgres://{quote(role)}:{quote(pw, safe='')}@{self.host}:{self.port}/{self.database}"


class WarehouseNotConfigured(RuntimeError):
    """No warehouse is named (``IM1_WAREHOUSE_URL`` unset and no local server given)."""


def from_env(embedded_url: str | None = None) -> Warehouse:
    """The configured warehouse: ``IM1_WAREHOUSE_URL``, else the local embedded server's admin URL
    (``embedded_url``, passed by the development tooling that started it)."""
    url = os.environ.get("IM1_WAREHOUSE_URL")
    if url:
        return Warehouse(admin_url=url.replace("postgresql+psycopg2://", "postgresql://"), embedded=False)
    if embedded_url:
        return Warehouse(admin_url=embedded_url, embedded=True)
    raise WarehouseNotConfigured("IM1_WAREHOUSE_URL is not set: name the warehouse server "
                                 "(e.g. postgresql://admin@host:5432/im1), or run locally through `im1 run`")
