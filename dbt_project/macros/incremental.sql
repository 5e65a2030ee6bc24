{#- The incremental mechanism (macros/README.md): every incremental model declares its key
    (unique_key) and its sources (meta.im1_incremental), runs im1_incremental_begin() as its
    pre-hook and im1_incremental_end() as its post-hook, and uses the im1_replace strategy. -#}

{#- The bookkeeping tables, created once per invocation (on-run-start), before models run in
    parallel: what each model has applied of each kind of source. -#}
{% macro im1_bookkeeping_tables() -%}
    {%- set s = generate_schema_name('staging', none) -%}
    create table if not exists {{ s }}.im1_applied_batches (
        model      text        not null,
        batch_id   bigint      not null,
        loaded_at  timestamptz not null,
        applied_at timestamptz not null default now(),
        primary key (model, batch_id, loaded_at)
    );
    create table if not exists {{ s }}.im1_watermarks (
        model       text        not null,
        source      text        not null,
        applied_at  timestamptz not null,
        fingerprint text,
        updated_at  timestamptz not null default now(),
        primary key (model, source)
    );
    create table if not exists {{ s }}.im1_lookups (
        model        text not null,
        lookup       text not null,
        lookup_key   text not null,
        lookup_value text not null,
        primary key (model, lookup, lookup_key)
    );
    drop table if exists {{ s }}.im1_lookup_snapshots
{%- endmacro %}

{% macro im1_bookkeeping(table) -%}
    {{ generate_schema_name('staging', none) }}.{{ table }}
{%- endmacro %}

{#- The model's declaration: meta.im1_incremental = {sources, lookups, retry, fingerprint}. -#}
{% macro im1_spec() -%}
    {%- set meta = config.get('meta') or {} -%}
    {{ return(meta.get('im1_incremental') or {}) }}
{%- endmacro %}

{% macro im1_raw_sources() -%}
    {{ return(im1_spec().get('sources', []) | selectattr('raw', 'defined') | list) }}
{%- endmacro %}

{% macro im1_model_sources() -%}
    {{ return(im1_spec().get('sources', []) | selectattr('ref', 'defined') | list) }}
{%- endmacro %}

{#- Per-run temp tables (one connection runs the hooks and the model SQL). -#}
{% macro im1_temp(kind) -%}
    pg_temp.im1_{{ kind }}__{{ this.identifier }}
{%- endmacro %}

{% macro im1_temp_name(kind) -%}
    im1_{{ kind }}__{{ this.identifier }}
{%- endmacro %}

{% macro im1_touched() -%}{{ im1_temp('touched') }}{%- endmacro %}

{#- The SQL of the model's fingerprint (a scalar), or 'null'. -#}
{% macro im1_fingerprint_sql() -%}
    {%- set f = im1_spec().get('fingerprint') -%}
    {{ return(context[f]() if f else 'null') }}
{%- endmacro %}

{#- {source model: applied_at as text} this model has read its model sources up to, or none when
    this run must read everything: first build, full refresh, a source without a watermark, or a
    changed fingerprint. Looked up when the SQL is rendered, so filters are constants the planner
    matches against the index on applied_at. -#}
{% macro im1_watermarks() -%}
    {%- if not execute or not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set q -%}
        select w.source, w.applied_at::text
        from {{ im1_bookkeeping('im1_watermarks') }} as w
        where w.model = '{{ this.identifier }}'
          and w.fingerprint is not distinct from ({{ im1_fingerprint_sql() }})
    {%- endset -%}
    {%- set found = {} -%}
    {%- for row in run_query(q).rows -%}
        {%- do found.update({row[0]: row[1]}) -%}
    {%- endfor -%}
    {%- for s in im1_model_sources() -%}
        {%- if s.ref not in found -%}
            {{ return(none) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(found) }}
{%- endmacro %}

{#- True when this run applies only what changed; false on a first build, a full refresh, or when
    the model must re-read its sources (see im1_watermarks). Use it in the model SQL instead of
    is_incremental(). -#}
{% macro im1_incremental() -%}
    {%- if not execute or config.get('materialized') != 'incremental' or not is_incremental() -%}
        {{ return(false) }}
    {%- endif -%}
    {{ return(im1_model_sources() | length == 0 or im1_watermarks() is not none) }}
{%- endmacro %}

{#- A filter on a model source's applied_at: the rows applied since this model last read it
    (``true`` when the run reads everything). -#}
{% macro im1_changed_since(column, source) -%}
    {%- set wm = im1_watermarks() -%}
    {%- if wm is none -%}
        true
    {%- else -%}
        ({{ column }} > cast('{{ wm[source] }}' as timestamptz) and {{ column }} <= cast('{{ run_started_at }}' as timestamptz))
    {%- endif -%}
{%- endmacro %}

{#- A touched key column as ``type`` for an index lookup on a source of ``supplier`` (the touched
    table holds the model's key, e.g. a TPP RowIdentifier as text): cast only on that supplier's
    rows, so another supplier's ids are never cast. -#}
{% macro im1_touched_key(k, column, type, supplier) -%}
    case when {{ k }}.supplier = '{{ supplier }}' then cast({{ k }}.{{ column }} as {{ type }}) end
{%- endmacro %}

{#- {column: SQL type} of a relation. -#}
{% macro im1_column_types(relation) -%}
    {%- set out = {} -%}
    {%- for c in adapter.get_columns_in_relation(relation) -%}
        {%- do out.update({c.name: c.data_type}) -%}
    {%- endfor -%}
    {{ return(out) }}
{%- endmacro %}


{# ---------------------------------------------------------------------------------------------
   Raw sources: the ready batches a model has not applied yet
   --------------------------------------------------------------------------------------------- #}

{#- The pending batches, and a temp view of their rows in ``raw``. The view names the batch ids as
    constants (written with format() in a DO block), so the planner estimates them from the raw
    table's statistics and reads a daily delta through the BRIN index on _batch_id; joined to the
    temp table instead, it would guess and read the whole raw table. -#}
{% macro im1_freeze_pending(raw) -%}
    {%- set supplier = raw.schema.replace('raw_', '') -%}
    drop table if exists {{ im1_temp('pending') }};
    create temp table {{ im1_temp_name('pending') }} as
    select b.batch_id, b.practice_code, b.extract_ts, b.loaded_at
    from {{ ref('stg_ingest__batches_ready') }} as b
    where b.supplier = '{{ supplier }}'
      and not exists (
          select 1 from {{ im1_bookkeeping('im1_applied_batches') }} as a
          where a.model = '{{ this.identifier }}' and a.batch_id = b.batch_id and a.loaded_at = b.loaded_at
      );
    analyze {{ im1_temp('pending') }};
    drop view if exists {{ im1_temp('pending_rows') }};
    do $im1$ begin
        execute format('create temp view %I as select * from {{ raw }} where _batch_id = any(%L::bigint[])',
                       '{{ im1_temp_name('pending_rows') }}',
                       (select coalesce(array_agg(batch_id order by batch_id), '{}') from {{ im1_temp('pending') }}));
    end $im1$
{%- endmacro %}

{#- In the model SQL: the raw rows to apply, with their batch's extract_ts and practice: on an
    incremental run those of the pending batches, otherwise every ready batch's. -#}
{% macro im1_raw_rows(raw) -%}
    {%- if im1_incremental() -%}
    select r.*, b.extract_ts
    from {{ im1_temp('pending_rows') }} as r
    inner join {{ im1_temp('pending') }} as b on b.batch_id = r._batch_id
    {%- else -%}
    select r.*, b.extract_ts
    from {{ raw }} as r
    inner join {{ ref('stg_ingest__batches_ready') }} as b on b.batch_id = r._batch_id
    {%- endif -%}
{%- endmacro %}


{# ---------------------------------------------------------------------------------------------
   Lookups: small models a model joins; a changed value re-derives the rows that use it
   --------------------------------------------------------------------------------------------- #}

{#- One lookup's rows as (lookup, lookup_key, lookup_value): the lookup macro selects the key
    columns it declares and ``value``; both are kept as JSON text (NULLs stay apart). -#}
{% macro im1_lookup_rows(l) -%}
    select distinct on (lookup_key) '{{ l.name }}'::text as lookup, lookup_key, lookup_value
    from (
        select json_build_array({{ l.key | join(', ') }})::text as lookup_key,
               json_build_array(value)::text as lookup_value
        from ({{ context[l.name]() }}) as l
    ) as l
    order by lookup_key, lookup_value
{%- endmacro %}

{#- The lookup keys whose value is not the one this model last applied (lookup_value null: the
    key is gone). On a run that reads everything: every current key. -#}
{% macro im1_changed_lookups(lookups, incremental) -%}
    {%- for l in lookups %}
    {%- if incremental %}
    select coalesce(c.lookup, s.lookup) as lookup, coalesce(c.lookup_key, s.lookup_key) as lookup_key, c.lookup_value
    from ({{ im1_lookup_rows(l) }}) as c
    full join (
        select lookup, lookup_key, lookup_value from {{ im1_bookkeeping('im1_lookups') }}
        where model = '{{ this.identifier }}' and lookup = '{{ l.name }}'
    ) as s on s.lookup_key = c.lookup_key
    where c.lookup_value is distinct from s.lookup_value
    {%- else %}
    select lookup, lookup_key, lookup_value from ({{ im1_lookup_rows(l) }}) as c
    {%- endif %}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- The model keys a changed lookup key touches: the rows of ``via`` (this model, or one of its
    model sources) whose columns equal the lookup key. -#}
{% macro im1_lookup_touches(l, keys, key_types) -%}
    {%- if l.via == 'this' -%}
        {%- set via, exprs = this, keys -%}
    {%- else -%}
        {%- set via = ref(l.via) -%}
        {%- set exprs = (im1_model_sources() | selectattr('ref', 'equalto', l.via) | first).key -%}
    {%- endif -%}
    {%- set types = im1_column_types(via) %}
    select {% for e in exprs %}cast({{ e }} as {{ key_types[keys[loop.index0]] }}){{ ', ' if not loop.last }}{% endfor %}
    from {{ via }} as v
    inner join {{ im1_temp('changed') }} as c on c.lookup = '{{ l.name }}'
    {%- for col in l.key %}
        and v.{{ col }} = cast(c.lookup_key::json ->> {{ loop.index0 }} as {{ types[col] }})
    {%- endfor %}
{%- endmacro %}


{# ---------------------------------------------------------------------------------------------
   The hooks and the strategy
   --------------------------------------------------------------------------------------------- #}

{#- Pre-hook. Freezes the pending batches of raw sources; on a run that reads everything forgets
    what the model applied (and empties the model when its fingerprint changed); on an incremental
    run lists the touched keys: rows of model sources applied since the watermark, rows whose
    lookup value changed, and the model's own rows its retry condition names. -#}
{% macro im1_incremental_begin() -%}
    {%- set spec = im1_spec() -%}
    {%- set incremental = im1_incremental() -%}
    {%- set keys = config.get('unique_key') -%}
    {%- set lookups = spec.get('lookups', []) -%}
    select 1
    {%- if not incremental %};
    delete from {{ im1_bookkeeping('im1_applied_batches') }} where model = '{{ this.identifier }}';
    delete from {{ im1_bookkeeping('im1_watermarks') }} where model = '{{ this.identifier }}';
    delete from {{ im1_bookkeeping('im1_lookups') }} where model = '{{ this.identifier }}'
    {%- if is_incremental() %};
    delete from {{ this }}
    {%- endif %}
    {%- endif %}
    {%- for raw in im1_raw_sources() %};
    {{ im1_freeze_pending(source(*raw.raw.split('.'))) }}
    {%- endfor %};
    drop table if exists {{ im1_temp('changed') }};
    create temp table {{ im1_temp_name('changed') }} (lookup text, lookup_key text, lookup_value text);
    {%- if lookups %}
    insert into {{ im1_temp('changed') }} {{ im1_changed_lookups(lookups, incremental) }};
    {%- endif %}
    analyze {{ im1_temp('changed') }}
    {%- if is_incremental() %};
    {%- set key_types = im1_column_types(this) %}
    drop table if exists {{ im1_touched() }};
    create temp table {{ im1_temp_name('touched') }} as
    select distinct * from (
        select {{ keys | join(', ') }} from {{ this }} where false
    {%- if incremental %}
    {%- for s in im1_model_sources() %}
        union all
        select {% for e in s.key %}cast({{ e }} as {{ key_types[keys[loop.index0]] }}){{ ', ' if not loop.last }}{% endfor %}
        from {{ ref(s.ref) }}
        where {{ im1_changed_since('applied_at', s.ref) }}
    {%- endfor %}
    {%- for l in lookups %}
        union all
        {{ im1_lookup_touches(l, keys, key_types) | indent(8) }}
    {%- endfor %}
    {%- if spec.get('retry') %}
        union all
        select {{ keys | join(', ') }} from {{ this }} where {{ spec.retry }}
    {%- endif %}
    {%- endif %}
    ) as touched;
    analyze {{ im1_touched() }}
    {%- endif %}
{%- endmacro %}

{#- Post-hook: what this run applied. -#}
{% macro im1_incremental_end() -%}
    {%- set spec = im1_spec() -%}
    select 1
    {%- for raw in im1_raw_sources() %};
    insert into {{ im1_bookkeeping('im1_applied_batches') }} (model, batch_id, loaded_at)
    select '{{ this.identifier }}', batch_id, loaded_at from {{ im1_temp('pending') }}
    on conflict do nothing
    {%- endfor %}
    {%- for s in im1_model_sources() %};
    insert into {{ im1_bookkeeping('im1_watermarks') }} as w (model, source, applied_at, fingerprint, updated_at)
    select '{{ this.identifier }}', '{{ s.ref }}', cast('{{ run_started_at }}' as timestamptz),
           ({{ im1_fingerprint_sql() }}), now()
    on conflict (model, source) do update
        set applied_at = excluded.applied_at, fingerprint = excluded.fingerprint, updated_at = excluded.updated_at
    {%- endfor %}
    {%- if spec.get('lookups') %};
    delete from {{ im1_bookkeeping('im1_lookups') }} as s
    using {{ im1_temp('changed') }} as c
    where s.model = '{{ this.identifier }}' and s.lookup = c.lookup and s.lookup_key = c.lookup_key;
    insert into {{ im1_bookkeeping('im1_lookups') }} (model, lookup, lookup_key, lookup_value)
    select '{{ this.identifier }}', lookup, lookup_key, lookup_value from {{ im1_temp('changed') }}
    where lookup_value is not null
    {%- endif %}
{%- endmacro %}

{#- The im1_replace strategy: the rows of every key in the run's output or in the touched set are
    deleted, then the output is inserted. A touched key the run does not output (a deleted record,
    one that no longer qualifies) therefore leaves the model. -#}
{% macro get_incremental_im1_replace_sql(arg_dict) -%}
    {%- set target, temp = arg_dict['target_relation'], arg_dict['temp_relation'] -%}
    {%- set keys = arg_dict['unique_key'] -%}
    {%- set cols = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ target }} as t
    using (
        select {{ keys | join(', ') }} from {{ temp }}
        union
        select {{ keys | join(', ') }} from {{ im1_touched() }}
    ) as k
    where {% for c in keys %}t.{{ c }} = k.{{ c }}{{ ' and ' if not loop.last }}{% endfor %};
    insert into {{ target }} ({{ cols }})
    select {{ cols }} from {{ temp }}
{%- endmacro %}

{#- Post-hook of a base model: after a full build the table gets its planner statistics at once
    (its tests and the models downstream query it next). -#}
{% macro im1_analyze_after_full_build() -%}
    {{ 'analyze ' ~ this if not is_incremental() else 'select 1' }}
{%- endmacro %}

{#- The latest applied_at in ``relation`` (text), or none when it is empty (the data tests of
    incremental models: macros/tests/where_subquery.sql). -#}
{% macro im1_max_applied_at(relation) -%}
    {%- set rows = run_query("select max(applied_at)::text from " ~ relation).rows -%}
    {{ return(rows[0][0] if rows | length > 0 and rows[0][0] is not none else none) }}
{%- endmacro %}
