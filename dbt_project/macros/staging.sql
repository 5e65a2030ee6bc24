{#- The staging models of both suppliers. Each generated model file (im1 dbt gen) calls one of these
    with its table and the spec's column list: [[raw column, type, staged name], ...]; the type
    names the cast (emis_<type> in emis_types.sql, tpp_<type> in tpp_types.sql).

      emis_staging / tpp_staging   a view: the current rows of a small table, read from raw;
      emis_base / tpp_base         an incremental base model of a big table: its current row per key,
                                   tombstones (is_deleted) kept, applied_at (macros/README.md);
      emis_current / tpp_current   the view over a base model: its live rows.

    Only rows of ready batches (stg_ingest__batches_ready) are read. -#}

{% macro im1_staged_names(columns) -%}
    {%- set out = [] -%}
    {%- for c in columns -%}{%- do out.append(c[2]) -%}{%- endfor -%}
    {{ return(out) }}
{%- endmacro %}

{% macro im1_typed_columns(supplier, columns) -%}
    {%- for c in columns %}
        {{ context[supplier ~ '_' ~ c[1]](c[0]) }} as {{ c[2] }},
    {%- endfor %}
{%- endmacro %}

{#- Rows of every ready batch of a raw table, with the batch's extract time. -#}
{% macro im1_ready_rows(raw) -%}
    select r.*, b.extract_ts
    from {{ raw }} as r
    inner join {{ ref('stg_ingest__batches_ready') }} as b on b.batch_id = r._batch_id
{%- endmacro %}


{# -- EMIS ---------------------------------------------------------------------------------------- #}

{#- Lineage columns of every EMIS staging row, after the spec's columns. -#}
{% macro emis_lineage_names() -%}
    {{ return(['practice_code', 'feed_id', 'batch_id', 'extract_ts', 'load_seq', 'file_row_number']) }}
{%- endmacro %}

{% macro emis_typed(columns, deletes) -%}
    {{- im1_typed_columns('emis', columns) }}
        _organisation as practice_code,
        _feed_id as feed_id,
        _batch_id as batch_id,
        extract_ts,
        _load_seq as load_seq,
        _row_number as file_row_number,
        {{ 'coalesce(' ~ emis_bool('deleted') ~ ', false)' if deletes else 'false' }} as is_deleted
{%- endmacro %}

{#- The latest row wins: batch extract time, then ProcessingId (when the table has it), then batch
    id, then file row. -#}
{% macro emis_recency(columns) -%}
    {%- set pid = 'processing_id desc nulls last, ' if 'processing_id' in im1_staged_names(columns) else '' -%}
    extract_ts desc, {{ pid }}batch_id desc, file_row_number desc
{%- endmacro %}

{#- A view: the current state of a small EMIS table. With ``keys``, the latest row per key wins and
    a latest row with Deleted = true removes the record; without keys (an append-only log) the same
    event delivered twice is kept once. -#}
{% macro emis_staging(table, columns, keys=[], deletes=true) -%}
{%- set names = im1_staged_names(columns) + emis_lineage_names() -%}
with

source as (
    {{ im1_ready_rows(source('raw_emis', table)) }}
),

typed as (
    select
        {{- emis_typed(columns, deletes) }}
    from source
),
{%- if keys %}

ranked as (
    select *, row_number() over (partition by {{ keys | join(', ') }} order by {{ emis_recency(columns) }}) as recency
    from typed
)

select {{ names | join(', ') }}
from ranked
where recency = 1
  and not is_deleted
{%- else %}
{%- set identity = im1_staged_names(columns) | reject('equalto', 'processing_id') | list %}

deduplicated as (
    select distinct on ({{ identity | join(', ') }}) *
    from typed
    order by {{ identity | join(', ') }}, {{ emis_recency(columns) }}
)

select {{ names | join(', ') }}
from deduplicated
where not is_deleted
{%- endif %}
{%- endmacro %}

{#- An incremental base model: the current row per key of a big EMIS table, tombstones kept (so a
    late, older row cannot bring a deleted record back). A run ranks the rows of the batches it
    applies with the current rows of the same keys; a current row that still wins keeps its
    applied_at. -#}
{% macro emis_base(table, columns, keys, deletes=true) -%}
{%- set names = im1_staged_names(columns) + emis_lineage_names() + ['is_deleted', 'applied_at'] -%}
with

source as (
    {{ im1_raw_rows(source('raw_emis', table)) }}
),

typed as (
    select
        {{- emis_typed(columns, deletes) }},
        cast('{{ run_started_at }}' as timestamptz) as applied_at
    from source
),

candidates as (
    select * from typed
{%- if im1_incremental() %}
    union all
    select {% for n in names %}t.{{ n }}{{ ', ' if not loop.last }}{% endfor %}
    from {{ this }} as t
    where exists (select 1 from typed as n where {% for k in keys %}n.{{ k }} = t.{{ k }}{{ ' and ' if not loop.last }}{% endfor %})
{%- endif %}
),

ranked as (
    select *, row_number() over (partition by {{ keys | join(', ') }} order by {{ emis_recency(columns) }}) as recency
    from candidates
)

select {{ names | join(', ') }}
from ranked
where recency = 1
{%- endmacro %}

{#- The live rows of an EMIS base model. -#}
{% macro emis_current(table, columns) -%}
select {{ (im1_staged_names(columns) + emis_lineage_names() + ['applied_at']) | join(', ') }}
from {{ ref('base_emis__' ~ table) }}
where not is_deleted
{%- endmacro %}


{# -- TPP ----------------------------------------------------------------------------------------- #}

{#- Rows are keyed on (practice_code, RowIdentifier): the practice the row was loaded for (the
    ingest checks that IDOrganisationVisibleTo equals it), which also keys the reference files that
    have no IDOrganisationVisibleTo (staff, organisations, SRMapping) per practice. The current
    row of a key is its latest row in extract order (batch extract time, then batch id, then file
    row: a late, older batch does not override a newer row); the record is deleted when that row
    has RemovedData = 1, or when it precedes the latest full file (ingest.files.is_delta = false,
    e.g. the bulk or a re-bulk of SRCode) of the table for the practice: a full file supersedes
    every earlier row. -#}

{% macro tpp_typed(columns, removed_data) -%}
    {{- im1_typed_columns('tpp', columns) }}
        _organisation as practice_code,
        _feed_id as feed_id,
        _batch_id as batch_id,
        extract_ts,
        _row_number as file_row_number,
        {{ 'coalesce(' ~ tpp_bool('removeddata') ~ ', false)' if removed_data else 'false' }} as is_deleted
{%- endmacro %}

{% macro tpp_recency() -%}
    extract_ts desc, batch_id desc, file_row_number desc
{%- endmacro %}

{#- The latest full file of ``file`` per practice. An incremental run sees only the batches it
    applies or applied before (a batch that becomes ready meanwhile waits for the next run). -#}
{% macro tpp_latest_full_files(file, pending_only=false) -%}
    select distinct on (f.practice_code) f.practice_code, f.extract_ts, f.batch_id
    from {{ ref('stg_ingest__full_files') }} as f
    where f.raw_table = '{{ file }}'
    {%- if pending_only %}
      and f.batch_id in (select batch_id from {{ im1_temp('pending') }})
    {%- elif im1_incremental() %}
      and (f.batch_id in (select batch_id from {{ im1_temp('pending') }})
           or f.batch_id in (select a.batch_id from {{ im1_bookkeeping('im1_applied_batches') }} as a
                             where a.model = '{{ this.identifier }}'))
    {%- endif %}
    order by f.practice_code, f.extract_ts desc, f.batch_id desc
{%- endmacro %}

{#- True when a row (alias ``r``) precedes its practice's latest full file (alias ``f``). -#}
{% macro tpp_superseded(r='r', f='f') -%}
    coalesce(({{ r }}.extract_ts, {{ r }}.batch_id) < ({{ f }}.extract_ts, {{ f }}.batch_id), false)
{%- endmacro %}

{#- Shared care (im1-formats.md 3.8): recorded at an organisation (IDOrganisationRegisteredAt) that
    is not the practice and where the patient has no GMS registration, so the practice is not the
    data controller. An uncorrelated IN, so PostgreSQL hashes the GMS map once whatever it
    estimates (a join here can be planned as a nested loop over every row pair). -#}
{% macro tpp_is_shared_care(r='r') -%}
    coalesce({{ r }}.id_organisation_registered_at <> {{ r }}.practice_code
             and not coalesce(({{ r }}.practice_code, {{ r }}.id_patient, {{ r }}.id_organisation_registered_at) in (
                 select g.practice_code, g.id_patient, g.organisation from {{ ref('stg_tpp__gms_organisations') }} as g
             ), false), false)
{%- endmacro %}

{% macro tpp_has_shared_care(columns) -%}
    {%- set names = im1_staged_names(columns) -%}
    {{ return('id_organisation_registered_at' in names and 'id_patient' in names) }}
{%- endmacro %}

{#- The lineage columns every TPP staging view ends with, and the shared-care flag. -#}
{% macro tpp_outputs(columns, r='r') -%}
    {%- for n in im1_staged_names(columns) %}
    {{ r }}.{{ n }},
    {%- endfor %}
    {{ r }}.practice_code,
    {{ r }}.feed_id,
    {{ r }}.batch_id,
    {{ r }}.extract_ts,
    {{ tpp_is_shared_care(r) if tpp_has_shared_care(columns) else 'false' }} as is_shared_care
{%- endmacro %}

{#- A view: the current state of a small TPP file, shared-care rows kept and flagged. -#}
{% macro tpp_staging(file, columns, removed_data=true) -%}
with

source as (
    {{ im1_ready_rows(source('raw_tpp', file)) }}
),

typed as (
    select
        {{- tpp_typed(columns, removed_data) }}
    from source
),

ranked as (
    select *, row_number() over (partition by practice_code, row_identifier order by {{ tpp_recency() }}) as recency
    from typed
),

full_files as (
    {{ tpp_latest_full_files(file) | indent(4) }}
)

select
    {{- tpp_outputs(columns) }}
from ranked as r
left join full_files as f on f.practice_code = r.practice_code
where r.recency = 1
  and not r.is_deleted
  and not {{ tpp_superseded() }}
{%- endmacro %}

{#- An incremental base model: the current row per key of a big TPP file, tombstones kept (a
    removal, or a row a full file superseded). A run ranks the rows of the batches it applies with
    the current rows of the same keys; a newly applied full file turns the earlier live rows of its
    practice into tombstones. A current row that still wins unchanged keeps its applied_at. -#}
{% macro tpp_base(file, columns, removed_data=true) -%}
{%- set names = im1_staged_names(columns) + ['practice_code', 'feed_id', 'batch_id', 'extract_ts', 'file_row_number', 'is_deleted', 'applied_at'] -%}
{%- set now = "cast('" ~ run_started_at ~ "' as timestamptz)" -%}
with

source as (
    {{ im1_raw_rows(source('raw_tpp', file)) }}
),

typed as (
    select
        {{- tpp_typed(columns, removed_data) }},
        {{ now }} as applied_at
    from source
),

candidates as (
    select * from typed
{%- if im1_incremental() %}
    union all
    -- the current rows of the keys this run's rows touch compete with them
    select {% for n in names %}t.{{ n }}{{ ', ' if not loop.last }}{% endfor %}
    from {{ this }} as t
    where exists (select 1 from typed as n where n.practice_code = t.practice_code and n.row_identifier = t.row_identifier)
    union all
    -- the live rows a full file applied by this run supersedes
    select {% for n in names %}t.{{ n }}{{ ', ' if not loop.last }}{% endfor %}
    from {{ this }} as t
    inner join ({{ tpp_latest_full_files(file, pending_only=true) }}) as f on f.practice_code = t.practice_code
    where not t.is_deleted
      and {{ tpp_superseded('t', 'f') }}
      and not exists (select 1 from typed as n where n.practice_code = t.practice_code and n.row_identifier = t.row_identifier)
{%- endif %}
),

ranked as (
    select *, row_number() over (partition by practice_code, row_identifier order by {{ tpp_recency() }}) as recency
    from candidates
),

full_files as (
    {{ tpp_latest_full_files(file) | indent(4) }}
)

select
    {%- for n in names[:-2] %}
    r.{{ n }},
    {%- endfor %}
    r.is_deleted or {{ tpp_superseded() }} as is_deleted,
    case when not r.is_deleted and {{ tpp_superseded() }} then {{ now }} else r.applied_at end as applied_at
from ranked as r
left join full_files as f on f.practice_code = r.practice_code
where r.recency = 1
{%- endmacro %}

{#- The live rows of a TPP base model, shared-care rows kept and flagged. -#}
{% macro tpp_current(file, columns) -%}
select
    {{- tpp_outputs(columns) }},
    r.applied_at
from {{ ref('base_tpp__' ~ file) }} as r
where not r.is_deleted
{%- endmacro %}
