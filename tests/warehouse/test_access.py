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

from im1.warehouse import BI_READER, LOADER, MART_READER, TRANSFORMER
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


@pytest.mark.parametrize("role", [BI_READER, MART_READER])
def test_a_reader_cannot_talk_itself_out_of_read_only(warehouse, role):
    """Issue 13: a reader can switch default_transaction_read_only off in its own session; it must
    then still have nothing to write with (no large objects, no temporary tables, no schema to create
    in) and must not be able to take the loader's advisory locks (their keys are visible in
    pg_locks; holding one would stall that feed's loads for ever)."""
    bootstrap(warehouse)
    with _as(warehouse, role) as conn:
        conn.execute("set default_transaction_read_only = off")
        for statement in ("select lo_from_bytea(0, 'x'::bytea)", "select lo_create(0)", "select lo_creat(-1)",
                          "create temporary table t (x int)", "create table published.t (x int)",
                          "select pg_advisory_lock(hashtext('im1.load:emis_x:Z99999'))",
                          "select pg_try_advisory_lock(hashtext('im1.load:emis_x:Z99999'))",
                          "select pg_advisory_xact_lock(1, 2)", "select pg_advisory_lock_shared(42)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # the loader still takes its locks
    with _as(warehouse, LOADER) as conn:
        assert conn.execute("select pg_try_advisory_lock(hashtext('im1.load:emis_x:Z99999'))").fetchone() == (True,)


@pytest.mark.parametrize("session", ["default_off", "transaction_read_write"])
@pytest.mark.parametrize("role", [BI_READER, MART_READER])
def test_a_reader_has_nothing_to_write_with_once_read_write(warehouse, probes, role, session):
    """Issue 13: whichever way a reader turns read-only off (the session default, or
    ``set transaction read write``), every way of writing is still closed: large objects, temporary
    objects, objects in public or a new schema, sequences it can see, the loader's functions and
    locks."""
    with _as(warehouse, TRANSFORMER) as tr:
        tr.execute("create sequence if not exists published.access_probe_seq")
    try:
        with _as(warehouse, role) as conn:
            if session == "default_off":
                conn.execute("set default_transaction_read_only = off")
            for statement in (
                    "select lo_from_bytea(0, 'x'::bytea)", "select lo_create(0)", "select lo_creat(-1)",
                    "select lo_open(1, 131072)", "select lowrite(0, 'x'::bytea)", "select lo_put(1, 0, 'x'::bytea)",
                    "select lo_unlink(1)", "select lo_import('/etc/hostname')",
                    "create temporary table t (x int)", "create temporary sequence s",
                    "create function pg_temp.f() returns int language sql as 'select 1'",
                    "create table public.t (x int)", "create function public.f() returns int language sql as 'select 1'",
                    "create table published.t (x int)", "create schema reader_owned",
                    "select nextval('published.access_probe_seq')", "select setval('published.access_probe_seq', 5)",
                    "select ingest.load_bigint('x')", "select nextval('ingest.load_seq')",
                    "select pg_advisory_lock(hashtext('im1.load:emis_x:Z99999'))",
                    "select pg_try_advisory_xact_lock(7)", "select pg_advisory_lock_shared(42)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    if session == "transaction_read_write":
                        conn.execute("set transaction read write")
                    conn.execute(statement)
    finally:
        with _as(warehouse, TRANSFORMER) as tr:
            tr.execute("drop sequence if exists published.access_probe_seq")


# what the loader could attach to a table dbt (the transformer) reads: code that would then run as
# the transformer (a row-security policy, a trigger, a default or index expression), or a table of
# its own put in place of the platform's
LOADER_DDL = (
    "alter table raw_emis.admin_patient enable row level security",
    "create policy p on raw_emis.admin_patient for select using (true)",
    "create trigger t before insert on raw_emis.admin_patient for each row "
    "execute function suppress_redundant_updates_trigger()",
    "alter table raw_emis.admin_patient alter column _feed_id set default 'x'",
    "create index raw_probe_ix on raw_emis.admin_patient ((lower(patientguid)))",
    "alter table raw_emis.admin_patient add column loader_column text",
    "drop table raw_tpp.srpatient",
    "create table raw_emis.loader_table (x int)",
    "alter table ingest.batches enable row level security",
    "create policy p on ingest.files for select using (true)",
    "create function ingest.loader_function() returns int language sql as 'select 1'",
    "create or replace function ingest.load_text(setting text) returns text language sql as $$ select 'x' $$",
)


def _owner_of(conn, relation: str) -> str:
    return conn.execute("select pg_get_userbyid(relowner) from pg_class where oid = %s::regclass",
                        (relation,)).fetchone()[0]


def test_the_loader_cannot_attach_code_to_the_tables_the_transformer_reads(warehouse, db):
    """Issue 13: raw and the ledger are owned by a role the loader is not a member of; the loader
    writes rows and nothing else."""
    bootstrap(warehouse)
    for relation in ("raw_emis.admin_patient", "raw_tpp.srpatient", "ingest.batches", "ingest.files"):
        owner = _owner_of(db, relation)
        assert owner != LOADER
        assert db.execute("select pg_has_role(%s, %s, 'MEMBER')", (LOADER, owner)).fetchone() == (False,), relation
    with _as(warehouse, LOADER) as conn:
        for statement in LOADER_DDL:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)
        # what loads need is still there
        with conn.transaction():
            conn.execute("lock table raw_emis.admin_patient in share row exclusive mode")
            conn.execute("select count(*) from raw_emis.admin_patient")
            conn.execute("delete from raw_emis.admin_patient where _batch_id = -1")


def test_bootstrap_takes_raw_back_from_a_loader_that_owned_it(warehouse, db):
    """A warehouse bootstrapped when the loader owned raw and the ledger is migrated: the tables are
    re-owned and what the loader had attached to them is removed."""
    bootstrap(warehouse)
    owner = _owner_of(db, "raw_emis.admin_patient")
    for relation in ("raw_emis.admin_patient", "ingest.batches"):
        db.execute(sql.SQL("alter table {} owner to {}").format(sql.SQL(relation), sql.Identifier(LOADER)))
    for schema in ("raw_emis", "raw_tpp", "ingest"):
        db.execute(sql.SQL("alter schema {} owner to {}").format(sql.Identifier(schema), sql.Identifier(LOADER)))
    with _as(warehouse, LOADER) as conn:
        conn.execute("create policy planted on raw_emis.admin_patient for select using (true)")
        conn.execute("alter table raw_emis.admin_patient enable row level security")
        conn.execute("create trigger planted before insert on ingest.batches for each row "
                     "execute function suppress_redundant_updates_trigger()")
        # while it owned them: grants to the readers and to everyone, and a view over patient rows
        conn.execute(sql.SQL("grant usage on schema raw_emis to public, {}").format(sql.Identifier(BI_READER)))
        conn.execute(sql.SQL("grant select on raw_emis.admin_patient to public, {}").format(sql.Identifier(BI_READER)))
        conn.execute("grant create on schema raw_emis to public")
        conn.execute("create view raw_emis.planted_view as select * from raw_emis.admin_patient")
    bootstrap(warehouse)
    with _as(warehouse, BI_READER) as bi, pytest.raises(psycopg.errors.InsufficientPrivilege):
        bi.execute("select count(*) from raw_emis.admin_patient")
    with _as(warehouse, LOADER) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("create table raw_emis.planted (x int)")
    assert db.execute("select to_regclass('raw_emis.planted_view')").fetchone() == (None,)
    for relation in ("raw_emis.admin_patient", "ingest.batches"):
        assert _owner_of(db, relation) == owner
    assert db.execute("select count(*) from pg_namespace where nspname in ('raw_emis', 'raw_tpp', 'ingest') "
                      "and pg_get_userbyid(nspowner) = %s", (LOADER,)).fetchone() == (0,)
    assert db.execute("select count(*) from pg_policy where polrelid = 'raw_emis.admin_patient'::regclass"
                      ).fetchone() == (0,)
    assert db.execute("select relrowsecurity from pg_class where oid = 'raw_emis.admin_patient'::regclass"
                      ).fetchone() == (False,)
    assert db.execute("select count(*) from pg_trigger where tgrelid = 'ingest.batches'::regclass "
                      "and not tgisinternal").fetchone() == (0,)
