"""Idempotent warehouse bootstrap: database, roles, schemas, grants, the ingest ledger and raw tables.

Who may do what:

* ``im1_owner`` (NOLOGIN, nobody logs in as it) owns ``raw_emis``, ``raw_tpp``, ``ingest`` and their
  tables. The ``loader`` is not a member: it inserts, reads and deletes raw rows and writes the
  ledger, but cannot alter those tables, so it cannot attach code (a row-security policy, a
  trigger) that would run as the transformer when dbt reads them. The one change a load makes to a
  raw table, a column for a new delivery column, goes through ``ingest.add_raw_column`` (SECURITY
  DEFINER, fixed behaviour: one text column on an existing raw table). ``stage_emis`` is the
  loader's own (only it reads half-split deliveries).
* ``transformer`` reads raw and ingest, and owns the dbt schemas it builds.
* ``bi_reader`` (BI tools) can read only ``published``: the marts after small-number suppression,
  in read-only transactions.
* ``mart_reader`` (restricted analysts, reconciliation) can read ``marts`` (unsuppressed) and
  ``published``, read-only.
* Nobody but ``transformer`` reads ``staging``, ``intermediate`` or ``reference``.

Every statement can be run again safely; new spec columns are added to existing raw tables, and a
warehouse whose raw tables the loader owned is migrated (re-owned, and whatever the loader had
attached to them removed).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from im1 import specs
from im1.warehouse import BI_READER, LOADER, MART_READER, OWNER, ROLES, TRANSFORMER, Warehouse

log = logging.getLogger(__name__)

RAW_SCHEMAS = {"emis": "raw_emis", "tpp": "raw_tpp"}
# Multi-organisation deliveries are COPYed once into UNLOGGED tables here, then split per
# organisation into raw (see im1.ingest.adapters.EmisMultiOrganisation); the tables live only while a batch is loading.
STAGE_SCHEMAS = {"emis": "stage_emis"}
INGEST_SCHEMA = "ingest"
# dbt layers (the dbt project's generate_schema_name macro uses these names verbatim)
DBT_SCHEMAS = ("reference", "staging", "intermediate", "marts", "published", "dbt_test_audit")
# who reads which dbt schema (read-only roles); every other dbt schema is the transformer's alone
READERS = {
    BI_READER: ("published",),
    MART_READER: ("marts", "published"),
}
READ_ONLY_ROLES = tuple(READERS)

# Metadata columns on every raw table. Their defaults read per-load session settings through the
# ingest.load_* functions below, so a plain COPY of the file's own columns fills them.
META_COLUMNS: list[tuple[str, str]] = [
    ("_feed_id", "text not null default ingest.load_text('im1.feed_id')"),
    ("_organisation", "text default nullif(ingest.load_text('im1.organisation'), '')"),
    ("_batch_id", "bigint not null default ingest.load_bigint('im1.batch_id')"),
    ("_file_id", "bigint not null default ingest.load_bigint('im1.file_id')"),
    ("_row_number", "bigint not null default nextval(ingest.load_regclass('im1.row_seq'))"),
    ("_loaded_at", "timestamptz not null default ingest.load_ts()"),
    # commit order per raw table (see im1.ingest.load.claim_load_seq): the watermark incremental
    # dbt models use to find rows they have not seen yet, safe while other loads are running
    ("_load_seq", "bigint default ingest.load_bigint('im1.load_seq')"),
]
# These read session state but are declared IMMUTABLE on purpose: COPY plans its column defaults
# once per statement, so the planner folds them to constants for that COPY instead of evaluating
# four settings and a regclass lookup per row (COPY with per-row evaluation was ~40% slower).
# Safe because only the loader writes raw tables, always with COPY (never cached INSERT plans),
# and every COPY re-plans. nextval() stays volatile, so row numbers still count per row.
LOAD_FUNCTIONS = """
create or replace function ingest.load_text(setting text) returns text
    language sql immutable parallel safe as $$ select current_setting(setting) $$;
create or replace function ingest.load_bigint(setting text) returns bigint
    language sql immutable parallel safe as $$ select current_setting(setting)::bigint $$;
create or replace function ingest.load_regclass(setting text) returns regclass
    language sql immutable parallel safe as $$ select current_setting(setting)::regclass $$;
create or replace function ingest.load_ts() returns timestamptz
    language sql immutable parallel safe as $$ select now() $$;
-- the loader adds a column for a delivery column the spec does not know (it keeps the data); it
-- may do only that, on an existing raw table, so this runs as the owner with a fixed behaviour
create or replace function ingest.add_raw_column(raw_schema text, raw_table text, raw_column text) returns void
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
    if raw_schema is null or raw_schema not in ('raw_emis', 'raw_tpp') then
        raise exception 'add_raw_column: % is not a raw schema', raw_schema using errcode = '42501';
    end if;
    if not exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                   where n.nspname = raw_schema and c.relname = raw_table and c.relkind = 'r') then
        raise exception 'add_raw_column: %.% is not a raw table', raw_schema, raw_table using errcode = '42P01';
    end if;
    if raw_column is null or raw_column = '' or octet_length(raw_column) > 63 or raw_column <> lower(btrim(raw_column))
            or raw_column ~ '[[:cntrl:]]' or left(raw_column, 1) = '_' then
        -- names starting with _ are the platform's metadata columns
        raise exception 'add_raw_column: a raw column is a lower-case name of 1-63 bytes without control '
                        'characters, not starting with _' using errcode = '22023';
    end if;
    execute format('alter table %I.%I add column if not exists %I text', raw_schema, raw_table, raw_column);
end $$;
revoke all on function ingest.add_raw_column(text, text, text) from public;
"""
META_NAMES = [c for c, _ in META_COLUMNS]

LEDGER_DDL = """
create sequence if not exists ingest.load_seq;
create table if not exists ingest.batches (
    batch_id        bigserial primary key,
    feed_id         text not null,
    supplier        text not null,
    batch_key       text not null,
    organisation    text not null default '*',
    extract_ts      timestamp not null,
    schema_version  text,
    status          text not null default 'discovered',
    is_late         boolean not null default false,
    file_count      integer,
    rows_loaded     bigint,
    bytes           bigint,
    error           text,
    discovered_at   timestamptz not null default now(),
    fetched_at      timestamptz,
    load_started_at timestamptz,
    loaded_at       timestamptz,
    updated_at      timestamptz not null default now(),
    constraint batches_status_ck check (status in
        ('discovered', 'fetched', 'loading', 'loaded', 'quarantined', 'failed', 'released')),
    constraint batches_key_uq unique (feed_id, batch_key, organisation)
);
create table if not exists ingest.files (
    file_id         bigserial primary key,
    batch_id        bigint not null references ingest.batches (batch_id) on delete cascade,
    file_name       text not null,
    table_name      text not null,
    remote_path     text,
    archive_path    text,
    bytes           bigint,
    sha256          text,
    rows_in_file    bigint,
    rows_loaded     bigint,
    schema_version  text,
    unknown_columns text[] not null default '{}',
    status          text not null default 'fetched',
    error           text,
    fetched_at      timestamptz,
    loaded_at       timestamptz,
    load_seconds    double precision,
    constraint files_batch_name_uq unique (batch_id, file_name)
);
create index if not exists files_sha256_ix on ingest.files (sha256);
create index if not exists files_batch_ix on ingest.files (batch_id);
create table if not exists ingest.events (
    event_id    bigserial primary key,
    at          timestamptz not null default now(),
    feed_id     text,
    batch_id    bigint,
    level       text not null default 'info',
    message     text not null
);
create index if not exists events_batch_ix on ingest.events (batch_id);
-- added by the ingest hardening (kept as separate statements so existing ledgers are upgraded)
alter table ingest.batches add column if not exists released_at timestamptz;
alter table ingest.batches add column if not exists release_note text;
alter table ingest.batches add column if not exists quality_status text;
alter table ingest.batches add column if not exists quality_checked_at timestamptz;
alter table ingest.batches add column if not exists delivery_batch_id bigint;
-- TPP: the manifest's IsDelta per file (false = a full file, superseding the table's earlier rows
-- for that organisation; null = not stated, e.g. EMIS files or TPP files the manifest does not list)
alter table ingest.files add column if not exists is_delta boolean;
-- sha256 of the plaintext as it was streamed into COPY (im1.ingest.load.copy_stream): a batch re-sent
-- under another name, or encrypted again, is recognised by its content (im1.ingest.ledger.same_content_as)
alter table ingest.files add column if not exists plain_sha256 text;
create index if not exists files_plain_sha256_ix on ingest.files (plain_sha256);
-- one row per expectation evaluated on a raw batch (Great Expectations, driven by the spec)
create table if not exists ingest.quality_checks (
    check_id        bigserial primary key,
    batch_id        bigint not null references ingest.batches (batch_id) on delete cascade,
    file_id         bigint references ingest.files (file_id) on delete cascade,
    table_name      text not null,
    expectation     text not null,
    column_name     text,
    success         boolean not null,
    observed_value  jsonb,
    run_id          text not null,
    run_at          timestamptz not null default now()
);
create index if not exists quality_checks_batch_ix on ingest.quality_checks (batch_id);
-- rows of a multi-organisation delivery that belong to no configured organisation (never dropped
-- silently: counted here, and the encrypted original stays in the archive)
create table if not exists ingest.unclaimed_rows (
    batch_id           bigint not null references ingest.batches (batch_id) on delete cascade,
    table_name         text not null,
    organisation_guid  text not null,
    rows               bigint not null,
    in_agreement       boolean not null,
    is_activated       boolean,
    primary key (batch_id, table_name, organisation_guid)
);
"""


def _ensure_database(wh: Warehouse) -> None:
    """Create the warehouse database if it does not exist (needs CREATEDB on a real server)."""
    with psycopg.connect(wh.url_for("postgres"), autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (wh.database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(wh.database)))
            log.info("created database %s", wh.database)


def ensure_database(wh: Warehouse, name: str) -> None:
    with psycopg.connect(wh.url_for("postgres"), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def _roles(conn: psycopg.Connection, wh: Warehouse) -> None:
    if not conn.execute("select 1 from pg_roles where rolname = %s", (OWNER,)).fetchone():
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(OWNER)))
    conn.execute(sql.SQL("alter role {} nologin").format(sql.Identifier(OWNER)))
    for role in ROLES:
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create role {} login").format(sql.Identifier(role)))
        pw = wh.role_password(role)
        if pw:
            conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(role), sql.Literal(pw)))
    db = sql.Identifier(wh.database)
    conn.execute(sql.SQL("revoke all on database {} from public").format(db))
    conn.execute(
        sql.SQL("grant connect, temporary on database {} to {}, {}").format(
            db, sql.Identifier(LOADER), sql.Identifier(TRANSFORMER)
        )
    )
    for reader in READ_ONLY_ROLES:
        conn.execute(sql.SQL("alter role {} set default_transaction_read_only = on").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("grant connect on database {} to {}").format(db, sql.Identifier(reader)))
    conn.execute("revoke create on schema public from public")
    is_super = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0]
    if is_super:
        _withhold_session_powers(conn)
    else:
        log.warning("not a superuser: the advisory-lock and large-object functions stay executable by every "
                    "role (a reader could hold the loader's locks or write large objects)")
    if not is_super:
        # a CREATEROLE admin must be a member to create objects owned by these roles
        for role in (OWNER, LOADER, TRANSFORMER):
            conn.execute(sql.SQL("grant {} to current_user").format(sql.Identifier(role)))


def _schemas(conn: psycopg.Connection) -> None:
    def owned(schema: str, owner: str) -> None:
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("alter schema {} owner to {}").format(sql.Identifier(schema), sql.Identifier(owner)))

    for schema in STAGE_SCHEMAS.values():
        owned(schema, LOADER)  # loader only: nobody else reads half-split deliveries
    for schema in [*RAW_SCHEMAS.values(), INGEST_SCHEMA]:
        owned(schema, OWNER)
        s = sql.Identifier(schema)
        conn.execute(sql.SQL("grant usage on schema {} to {}, {}").format(
            s, sql.Identifier(TRANSFORMER), sql.Identifier(LOADER)))
        conn.execute(sql.SQL("revoke create on schema {} from {}").format(s, sql.Identifier(LOADER)))
        conn.execute(
            sql.SQL("alter default privileges for role {} in schema {} grant select on tables to {}").format(
                sql.Identifier(OWNER), s, sql.Identifier(TRANSFORMER)
            )
        )
    for schema in DBT_SCHEMAS:
        owned(schema, TRANSFORMER)
    for reader, readable in READERS.items():
        r = sql.Identifier(reader)
        for schema in DBT_SCHEMAS:
            s = sql.Identifier(schema)
            if schema in readable:
                # tables dbt creates later (as the transformer) are readable through default privileges
                conn.execute(sql.SQL("grant usage on schema {} to {}").format(s, r))
                conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(s, r))
                conn.execute(
                    sql.SQL("alter default privileges for role {} in schema {} grant select on tables to {}").format(
                        sql.Identifier(TRANSFORMER), s, r
                    )
                )
            else:
                # also withdraws what an older bootstrap granted (bi_reader used to read marts)
                conn.execute(sql.SQL("revoke all on schema {} from {}").format(s, r))
                conn.execute(sql.SQL("revoke all on all tables in schema {} from {}").format(s, r))
                conn.execute(
                    sql.SQL("alter default privileges for role {} in schema {} revoke all on tables from {}").format(
                        sql.Identifier(TRANSFORMER), s, r
                    )
                )


def raw_table_ddl(schema: str, table: str, columns: list[str]) -> list[sql.Composed]:
    """DDL creating (or extending) one raw table: every source column as text, plus metadata."""
    ident = sql.Identifier(schema, table)
    cols = [sql.SQL("{} text").format(sql.Identifier(specs.raw_column_name(c))) for c in columns]
    meta = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(d)) for n, d in META_COLUMNS]
    stmts = [
        sql.SQL("create table if not exists {} ({})").format(ident, sql.SQL(", ").join(cols + meta)),
    ]
    for c in columns:
        stmts.append(
            sql.SQL("alter table {} add column if not exists {} text").format(
                ident, sql.Identifier(specs.raw_column_name(c))
            )
        )
    for name, definition in META_COLUMNS:
        # columns added to the platform later reach existing tables without a rewrite
        stmts.append(
            sql.SQL("alter table {} add column if not exists {} {}").format(
                ident, sql.Identifier(name), sql.SQL(definition.split()[0])
            )
        )
        default = definition.split(" default ", 1)[1]
        stmts.append(
            sql.SQL("alter table {} alter column {} set default {}").format(
                ident, sql.Identifier(name), sql.SQL(default)
            )
        )
    stmts.append(
        sql.SQL("create index if not exists {} on {} using brin (_batch_id)").format(
            sql.Identifier(f"{table}__batch_brin"), ident
        )
    )
    stmts.append(
        sql.SQL("create index if not exists {} on {} using brin (_load_seq)").format(
            sql.Identifier(f"{table}__load_seq_brin"), ident
        )
    )
    return stmts


def _raw_tables(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(OWNER)))
    try:
        conn.execute(LOAD_FUNCTIONS)
        for t in specs.emis_tables().values():
            for stmt in raw_table_ddl(RAW_SCHEMAS["emis"], t.raw_name, t.all_column_names()):
                conn.execute(stmt)
        for f in specs.tpp_files().values():
            if f.columns and f.name != "SRManifest":
                for stmt in raw_table_ddl(RAW_SCHEMAS["tpp"], f.raw_name, list(f.columns)):
                    conn.execute(stmt)
        conn.execute(LEDGER_DDL)
    finally:
        conn.execute("reset role")


# What the loader may do to the owner's tables: raw rows are inserted, read (a multi-organisation
# delivery's tables are created LIKE raw) and deleted (a quarantined batch); DELETE also lets the load
# take its SHARE ROW EXCLUSIVE lock (see im1.ingest.load.claim_load_seq). The ledger is read and written.
LOADER_TABLE_PRIVILEGES = {"raw_emis": "select, insert, delete", "raw_tpp": "select, insert, delete",
                           INGEST_SCHEMA: "select, insert, update, delete"}
# the functions of ingest that bootstrap creates (any other function there is not the platform's)
INGEST_FUNCTIONS = ("load_text", "load_bigint", "load_regclass", "load_ts", "add_raw_column")


def _reset_acls(conn: psycopg.Connection) -> None:
    """Raw and the ledger grant exactly what :func:`_schemas` and :func:`_table_grants` grant: every
    other privilege on those schemas, their tables and sequences (one granted to PUBLIC or to a
    reader by a role that once owned them, say) is revoked, and views or other relations the platform
    never creates there (one could call code that runs as whoever reads it) are dropped."""
    schemas = [*RAW_SCHEMAS.values(), INGEST_SCHEMA]
    for nsp, rel, kind in conn.execute(
            "select n.nspname, c.relname, c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = any(%s) and c.relkind in ('v', 'm', 'f')", (schemas,)).fetchall():
        what = {"v": "view", "m": "materialized view", "f": "foreign table"}[kind]
        log.warning("dropping %s %s.%s (the platform creates none there)", what, nsp, rel)
        conn.execute(sql.SQL("drop {} {} cascade").format(sql.SQL(what), sql.Identifier(nsp, rel)))
    grantees = [sql.SQL("public")] + [sql.Identifier(r) for (r,) in conn.execute(
        "select rolname from pg_roles where rolname !~ '^pg_' and rolname <> all(%s) and rolname <> current_user",
        ([OWNER],)).fetchall()]
    for schema in schemas:
        s = sql.Identifier(schema)
        for who in grantees:
            conn.execute(sql.SQL("revoke all on schema {} from {}").format(s, who))
            conn.execute(sql.SQL("revoke all on all tables in schema {} from {}").format(s, who))
            conn.execute(sql.SQL("revoke all on all sequences in schema {} from {}").format(s, who))
        conn.execute(sql.SQL("grant usage on schema {} to {}, {}").format(
            s, sql.Identifier(TRANSFORMER), sql.Identifier(LOADER)))


def _table_grants(conn: psycopg.Connection) -> None:
    """The transformer reads raw and the ledger; the loader writes rows (and adds raw columns through
    ``ingest.add_raw_column``), never DDL."""
    _reset_acls(conn)
    loader, transformer = sql.Identifier(LOADER), sql.Identifier(TRANSFORMER)
    for schema, privileges in LOADER_TABLE_PRIVILEGES.items():
        s = sql.Identifier(schema)
        conn.execute(sql.SQL("revoke all on all tables in schema {} from {}").format(s, loader))
        conn.execute(sql.SQL("grant {} on all tables in schema {} to {}").format(sql.SQL(privileges), s, loader))
        conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(s, transformer))
    conn.execute(sql.SQL("grant usage, select, update on all sequences in schema ingest to {}").format(loader))
    conn.execute(sql.SQL("grant execute on function ingest.add_raw_column(text, text, text) to {}").format(loader))


def _take_back_from_loader(conn: psycopg.Connection) -> None:
    """Migrate a warehouse bootstrapped when the loader owned raw and the ledger: re-own what it owned
    there, and remove what it could have attached (row-security policies, triggers, rules, functions)."""
    schemas = [*RAW_SCHEMAS.values(), INGEST_SCHEMA]
    owner = sql.Identifier(OWNER)
    kinds = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence"}
    # sequences owned by a column move with their table, so tables first, then what is left
    for pass_kinds in (("r", "p", "v", "m", "f"), ("S",)):
        for nsp, rel, kind in conn.execute(
                "select n.nspname, c.relname, c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = any(%s) and c.relkind::text = any(%s) and pg_get_userbyid(c.relowner) <> %s",
                (schemas, list(pass_kinds), OWNER)).fetchall():
            log.warning("re-owning %s.%s (owned by another role) to %s", nsp, rel, OWNER)
            conn.execute(sql.SQL("alter {} {} owner to {}").format(
                sql.SQL(kinds[kind]), sql.Identifier(nsp, rel), owner))
    for nsp, rel, name in conn.execute(
            "select n.nspname, c.relname, p.polname from pg_policy p join pg_class c on c.oid = p.polrelid "
            "join pg_namespace n on n.oid = c.relnamespace where n.nspname = any(%s)", (schemas,)).fetchall():
        log.warning("dropping row-security policy %s on %s.%s (the platform creates none)", name, nsp, rel)
        conn.execute(sql.SQL("drop policy {} on {}").format(sql.Identifier(name), sql.Identifier(nsp, rel)))
    for nsp, rel in conn.execute(
            "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = any(%s) and (c.relrowsecurity or c.relforcerowsecurity)", (schemas,)).fetchall():
        conn.execute(sql.SQL("alter table {} disable row level security, no force row level security").format(
            sql.Identifier(nsp, rel)))
    for nsp, rel, name in conn.execute(
            "select n.nspname, c.relname, t.tgname from pg_trigger t join pg_class c on c.oid = t.tgrelid "
            "join pg_namespace n on n.oid = c.relnamespace where n.nspname = any(%s) and not t.tgisinternal",
            (schemas,)).fetchall():
        log.warning("dropping trigger %s on %s.%s (the platform creates none)", name, nsp, rel)
        conn.execute(sql.SQL("drop trigger {} on {}").format(sql.Identifier(name), sql.Identifier(nsp, rel)))
    for nsp, rel, name in conn.execute(
            "select n.nspname, c.relname, r.rulename from pg_rewrite r join pg_class c on c.oid = r.ev_class "
            "join pg_namespace n on n.oid = c.relnamespace where n.nspname = any(%s) and r.rulename <> '_RETURN'",
            (schemas,)).fetchall():
        log.warning("dropping rule %s on %s.%s (the platform creates none)", name, nsp, rel)
        conn.execute(sql.SQL("drop rule {} on {}").format(sql.Identifier(name), sql.Identifier(nsp, rel)))
    for nsp, name, signature in conn.execute(
            "select n.nspname, p.proname, p.oid::regprocedure::text from pg_proc p "
            "join pg_namespace n on n.oid = p.pronamespace "
            "where n.nspname = any(%s) and pg_get_userbyid(p.proowner) <> %s", (schemas, OWNER)).fetchall():
        if nsp == INGEST_SCHEMA and name in INGEST_FUNCTIONS:
            conn.execute(sql.SQL("alter function {} owner to {}").format(sql.SQL(signature), owner))
        else:
            log.warning("dropping function %s (not the platform's)", signature)
            conn.execute(sql.SQL("drop function {}").format(sql.SQL(signature)))


def add_column(conn: psycopg.Connection, schema: str, table: str, column: str) -> None:
    """Add a text column for a delivery column the spec does not know: on a raw table through
    ``ingest.add_raw_column`` (the loader does not own raw), on the loader's own stage tables directly."""
    if schema in RAW_SCHEMAS.values():
        conn.execute("select ingest.add_raw_column(%s, %s, %s)", (schema, table, column))
    else:
        conn.execute(sql.SQL("alter table {} add column if not exists {} text").format(
            sql.Identifier(schema, table), sql.Identifier(column)))


# Functions every role may run by default that let a read-only role act anyway: a reader can turn
# default_transaction_read_only off in its own session, so "read only" must also mean it has nothing
# to write with. Large objects need no table privilege; the advisory locks are how loads exclude each
# other, and their keys can be read from pg_locks (a reader holding one would stall that load).
_LARGE_OBJECT_WRITERS = ("lo_creat", "lo_create", "lo_from_bytea", "lo_import", "lo_put", "lowrite",
                         "lo_truncate", "lo_truncate64", "lo_unlink", "lo_open")


def _withhold_session_powers(conn: psycopg.Connection) -> None:
    """Advisory locks for the loader and transformer only; large objects for nobody (in this database)."""
    procs = conn.execute(
        "select p.oid::regprocedure::text, p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
        "where n.nspname = 'pg_catalog' and (p.proname like '%%advisory%%lock%%' or p.proname = any(%s))",
        (list(_LARGE_OBJECT_WRITERS),)).fetchall()
    for signature, name in procs:
        conn.execute(sql.SQL("revoke execute on function {} from public").format(sql.SQL(signature)))
        if "advisory" in name:
            conn.execute(sql.SQL("grant execute on function {} to {}, {}").format(
                sql.SQL(signature), sql.Identifier(LOADER), sql.Identifier(TRANSFORMER)))


def bootstrap(wh: Warehouse) -> None:
    """Create or update everything the platform needs in the warehouse (safe to run repeatedly)."""
    _ensure_database(wh)
    with psycopg.connect(wh.admin_url) as conn:
        # serialise concurrent bootstraps (two DAG runs starting at once)
        conn.execute("select pg_advisory_xact_lock(hashtext('im1.bootstrap'))")
        _roles(conn, wh)
        _schemas(conn)
        _take_back_from_loader(conn)
        _raw_tables(conn)
        _table_grants(conn)
        conn.commit()
    log.info("warehouse %s bootstrapped", wh.database)
