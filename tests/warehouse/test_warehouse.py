"""Warehouse bootstrap is idempotent and the roles can do exactly what they should."""

from __future__ import annotations

import psycopg
import pytest

from im1 import specs
from im1.warehouse import BI_READER, LOADER, TRANSFORMER
from im1.warehouse.bootstrap import bootstrap


def test_bootstrap_is_idempotent_and_creates_every_raw_table(warehouse, db):
    bootstrap(warehouse)
    bootstrap(warehouse)
    schemas = {r[0] for r in db.execute("select schema_name from information_schema.schemata")}
    assert {"raw_emis", "raw_tpp", "ingest", "staging", "intermediate", "marts"} <= schemas
    tables = {r[0] for r in db.execute(
        "select table_name from information_schema.tables where table_schema = 'raw_emis'")}
    assert tables == {t.lower() for t in specs.emis_tables()}
    cols = [r[0] for r in db.execute(
        "select column_name from information_schema.columns where table_schema='raw_emis' "
        "and table_name='appointment_slot' order by ordinal_position")]
    assert "nationalslotcategoryname" in cols and cols[-7:] == [
        "_feed_id", "_organisation", "_batch_id", "_file_id", "_row_number", "_loaded_at", "_load_seq"]
    assert {r[0] for r in db.execute("select data_type from information_schema.columns "
                                     "where table_schema='raw_emis' and column_name not like '\\_%'")} == {"text"}


def _as(warehouse, role):
    return psycopg.connect(warehouse.role_url(role), autocommit=True)


def test_roles_have_least_privilege(warehouse, db):
    # a published table created by dbt (the transformer) is readable by BI through default privileges
    with _as(warehouse, TRANSFORMER) as tr:
        tr.execute("create table if not exists published.role_probe (x int)")
    with _as(warehouse, BI_READER) as bi:
        bi.execute("select * from published.role_probe")
        for forbidden in ("select * from raw_emis.admin_patient", "select * from ingest.batches"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                bi.execute(forbidden)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            bi.execute("create temp table t (x int)")
        for schema in ("raw_emis", "raw_tpp", "ingest", "staging", "intermediate", "reference", "marts"):
            assert bi.execute("select has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone() == (False,)
    with _as(warehouse, LOADER) as ld:
        ld.execute("select count(*) from raw_emis.admin_patient")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ld.execute("create table marts.nope (x int)")
    with _as(warehouse, TRANSFORMER) as tr:
        tr.execute("select count(*) from raw_emis.admin_patient")
        tr.execute("select count(*) from ingest.batches")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            tr.execute("delete from raw_emis.admin_patient")
        tr.execute("drop table published.role_probe")
