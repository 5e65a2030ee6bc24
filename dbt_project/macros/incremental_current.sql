{#- Incremental intermediate models over the incremental base models.

    A base model (e.g. base_emis__appointment_slot) keeps one current row per record, tombstones
    included (is_deleted), and stamps applied_at = the start of the run that changed the row. An
    intermediate model built from it re-derives, per run, only the keys that need it:

      * the keys whose base row changed since the model last read the base
        (applied_at > the model's own max(applied_at), taken once per run), and
      * keys whose looked-up values changed without the row changing (e.g. a session given to
        another clinician, a drug code that arrived after its issue): the model says which.

    Its pre-hook lists those keys in a temp table and deletes them from the model; the model SQL
    then selects the current rows of the same keys that still belong in it (not deleted, and
    e.g. a slot that still has a patient), which the delete+insert strategy inserts. A deleted or
    no longer qualifying record therefore leaves the model, and a re-run finds nothing to do.

    Lookups: the model's post-hook keeps a copy of the small lookup it joined (key -> value, in
    staging.im1_lookup_snapshots); the next run compares the lookup with that copy and re-derives
    only the rows of the keys whose value changed (found through an index), never scanning the
    whole model. -#}

{% macro im1_touched_relation() -%}
    pg_temp.im1_touched__{{ this.identifier }}
{%- endmacro %}

{#- The latest applied_at the model has read (a timestamptz literal), or none on a first build or
    full refresh. Evaluated at run time, so the base model's filter is a constant the planner can
    match against an index on applied_at. -#}
{% macro im1_applied_watermark() -%}
    {%- if not execute or not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(im1_max_applied_at(this)) }}
{%- endmacro %}

{#- The latest applied_at in ``relation`` (text), or none when it is empty. -#}
{% macro im1_max_applied_at(relation) -%}
    {%- set rows = run_query("select max(applied_at)::text from " ~ relation).rows -%}
    {{ return(rows[0][0] if rows | length > 0 and rows[0][0] is not none else none) }}
{%- endmacro %}

{#- A filter on a base model's applied_at: rows applied after the model's watermark. -#}
{% macro im1_applied_since(column='applied_at') -%}
    {%- set wm = im1_applied_watermark() -%}
    {%- if wm is none -%}true{%- else -%}{{ column }} > cast('{{ wm }}' as timestamptz){%- endif -%}
{%- endmacro %}

{#- Created once per invocation (on-run-start), beside staging.im1_applied_batches. -#}
{% macro im1_lookup_snapshots_table() -%}
    create table if not exists {{ generate_schema_name('staging', none) }}.im1_lookup_snapshots (
        model        text not null,
        lookup_key   text not null,
        lookup_value text,
        primary key (model, lookup_key)
    )
{%- endmacro %}

{% macro im1_lookup_snapshots_relation() -%}
    {{ generate_schema_name('staging', none) }}.im1_lookup_snapshots
{%- endmacro %}

{% macro im1_changed_relation() -%}
    pg_temp.im1_changed__{{ this.identifier }}
{%- endmacro %}

{#- ``lookup_sql`` selects lookup_key (the key's parts joined with chr(31)) and lookup_value (text;
    json_build_array(...)::text keeps NULLs apart). The keys whose value is not the one the model
    last applied, split into the columns ``parts``. -#}
{% macro im1_changed_lookups(lookup_sql, parts) -%}
    select
        {%- for part in parts %}
        split_part(changed.lookup_key, chr(31), {{ loop.index }}) as {{ part }}{{ ',' if not loop.last }}
        {%- endfor %}
    from (
        select coalesce(c.lookup_key, s.lookup_key) as lookup_key
        from ({{ lookup_sql }}) as c
        full join (
            select lookup_key, lookup_value from {{ im1_lookup_snapshots_relation() }}
            where model = '{{ this.identifier }}'
        ) as s on s.lookup_key = c.lookup_key
        where c.lookup_value is distinct from s.lookup_value
    ) as changed
{%- endmacro %}

{#- Post-hook: the lookup as this run applied it. -#}
{% macro im1_save_lookup_snapshot(lookup_sql) -%}
    delete from {{ im1_lookup_snapshots_relation() }} where model = '{{ this.identifier }}';
    insert into {{ im1_lookup_snapshots_relation() }} (model, lookup_key, lookup_value)
    select '{{ this.identifier }}', l.lookup_key, l.lookup_value from ({{ lookup_sql }}) as l
{%- endmacro %}

{#- Pre-hook: ``touched_sql`` selects the key columns of the rows to re-derive; it may read
    im1_changed_relation(), the changed lookup keys from ``changed_sql`` (materialised and analysed
    first, so the planner knows how few there are). Incremental runs only; a first build or full
    refresh reads everything. -#}
{% macro im1_prepare_touched(key_columns, touched_sql, changed_sql=none) -%}
    {%- if is_incremental() -%}
    {%- if changed_sql is not none %}
    drop table if exists {{ im1_changed_relation() }};
    create temp table {{ im1_changed_relation().split('.')[1] }} as {{ changed_sql }};
    analyze {{ im1_changed_relation() }};
    {%- endif %}
    drop table if exists {{ im1_touched_relation() }};
    create temp table {{ im1_touched_relation().split('.')[1] }} as
    select distinct * from ({{ touched_sql }}) as touched;
    analyze {{ im1_touched_relation() }};
    delete from {{ this }} as t
    using {{ im1_touched_relation() }} as k
    where {% for c in key_columns %}t.{{ c }} = k.{{ c }}{% if not loop.last %} and {% endif %}{% endfor %}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
