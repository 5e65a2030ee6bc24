"""The access rule for the dbt layers: BI tools (``bi_reader``) read only ``published`` (the marts after
small-number suppression); ``mart_reader`` reads the unsuppressed ``marts`` and ``published``; nobody
but the transformer reads ``staging``, ``intermediate``, ``reference``, raw or the ingest ledger.

Tables are created the way dbt creates them (as the transformer, after bootstrap), so the rule is
proved for relations built later through default privileges, and also for views, which is how a
published model could otherwise leak a table it selects from.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from im1.warehouse import BI_READER, MART_READER, TRANSFORMER
from im1.warehouse.bootstrap import bootstrap

DBT_LAYERS = ("staging", "intermediate", "reference", "marts", "published")
READABLE = {
    BI_READER: {"published"},
    MART_READER: {"marts", "published"},
}


def _as(warehouse, role):
    return psycopg.connect(warehouse.role_url(role), autocommit=True)


@pytest.fixture()
def probes(warehouse):
    """One table and one view per dbt schema, created by the transformer after bootstrap."""
    bootstrap(warehouse)  # also upgrades a warehouse whose older bootstrap let bi_reader read marts
    with _as(warehouse, TRANSFORMER) as tr:
        for schema in DBT_LAYERS:
            tr.execute(sql.SQL("create table {} as select 1 as x").format(sql.Identifier(schema, "access_probe")))
            tr.execute(sql.SQL("create view {} as select x from {}").format(
                sql.Identifier(schema, "access_probe_v"), sql.Identifier(schema, "access_probe")))
    yield
    with _as(warehouse, TRANSFORMER) as tr:
        for schema in DBT_LAYERS:
            tr.execute(sql.SQL("drop view if exists {}").format(sql.Identifier(schema, "access_probe_v")))
            tr.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(schema, "access_probe")))


@pytest.mark.parametrize("role", [BI_READER, MART_READER])
def test_readers_see_exactly_their_schemas(warehouse, probes, role):
    with _as(warehouse, role) as conn:
        for schema in DBT_LAYERS:
            for rel in ("access_probe", "access_probe_v"):
                query = sql.SQL("select x from {}").format(sql.Identifier(schema, rel))
                if schema in READABLE[role]:
                    assert conn.execute(query).fetchone() == (1,), f"{role} must read {schema}.{rel}"
                else:
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(query)
        for forbidden in ("select count(*) from raw_emis.admin_patient", "select count(*) from raw_tpp.srpatient",
                          "select count(*) from ingest.batches", "select count(*) from ingest.files"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)
        # no usage on any schema outside the readable ones (so not even table names can be listed)
        for schema in ("raw_emis", "raw_tpp", "ingest", "stage_emis", *DBT_LAYERS):
            usage = conn.execute("select has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone()[0]
            assert usage is (schema in READABLE[role]), (role, schema)
        # read-only even where it can read
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("create temp table t (x int)")


def test_bi_reader_cannot_read_marts_granted_by_an_older_bootstrap(warehouse, probes):
    """A warehouse bootstrapped when BI read the marts is corrected by the next bootstrap."""
    with psycopg.connect(warehouse.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("grant usage on schema marts to {}").format(sql.Identifier(BI_READER)))
        admin.execute(sql.SQL("grant select on all tables in schema marts to {}").format(sql.Identifier(BI_READER)))
    with _as(warehouse, BI_READER) as bi:
        assert bi.execute("select x from marts.access_probe").fetchone() == (1,)
    bootstrap(warehouse)
    with _as(warehouse, BI_READER) as bi, pytest.raises(psycopg.errors.InsufficientPrivilege):
        bi.execute("select x from marts.access_probe")
