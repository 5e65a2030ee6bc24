{#- Batch bookkeeping for the incremental base models.

    A model applies whole ledger batches: in its pre-hook it takes, once, the list of batches that
    loaded and passed their quality checks but are not yet applied to it (a temp table, so the
    model SQL and the post-hook see the same list even while new batches land), and its post-hook
    records them in staging.im1_applied_batches. A batch is identified with its loaded_at, so a
    quarantined batch that is released and loaded again is applied again. A full refresh forgets
    what the model had applied. Unlike a max(loaded_at) watermark, a batch that passes its checks
    after a later one did is never skipped. -#}

{% macro im1_pending_batches_relation() -%}
    pg_temp.im1_pending__{{ this.identifier }}
{%- endmacro %}

{#- The pending batches' raw rows (a temp view made by the pre-hook; see im1_pending_batches). -#}
{% macro im1_pending_rows_relation() -%}
    pg_temp.im1_new__{{ this.identifier }}
{%- endmacro %}

{#- Created once per invocation (on-run-start), before models run in parallel. -#}
{% macro im1_applied_batches_table() -%}
    create table if not exists {{ generate_schema_name('staging', none) }}.im1_applied_batches (
        model      text        not null,
        batch_id   bigint      not null,
        loaded_at  timestamptz not null,
        applied_at timestamptz not null default now(),
        primary key (model, batch_id, loaded_at)
    )
{%- endmacro %}

{#- Pre-hook: the list of pending batches, and a view of their rows in ``raw_relation``.

    The view names the batch ids as constants (written with format() in a DO block), so the
    planner estimates them from the raw table's statistics: a daily delta is a few thousand rows
    of a table that holds millions, found through the BRIN index on _batch_id. Joined to the temp
    table instead, the planner must guess the rows per batch from the number of distinct batches,
    and it reads the whole raw table. -#}
{% macro im1_pending_batches(supplier, raw_relation=none) -%}
    {% if not is_incremental() %}
    delete from {{ this.schema }}.im1_applied_batches where model = '{{ this.identifier }}';
    {% endif %}
    drop table if exists {{ im1_pending_batches_relation() }};
    create temp table {{ im1_pending_batches_relation().split('.')[1] }} as
    select b.batch_id, b.extract_ts, b.loaded_at
    from {{ source('ingest', 'batches') }} as b
    where b.supplier = '{{ supplier }}'
      and b.status = 'loaded'
      and b.quality_status = 'passed'
      and not exists (
          select 1 from {{ this.schema }}.im1_applied_batches as a
          where a.model = '{{ this.identifier }}' and a.batch_id = b.batch_id and a.loaded_at = b.loaded_at
      );
    analyze {{ im1_pending_batches_relation() }}
    {%- if raw_relation is not none %};
    drop view if exists {{ im1_pending_rows_relation() }};
    do $im1$ begin
        execute format('create temp view %I as select * from {{ raw_relation }} where _batch_id = any(%L::bigint[])',
                       '{{ im1_pending_rows_relation().split('.')[1] }}',
                       (select coalesce(array_agg(batch_id order by batch_id), '{}') from {{ im1_pending_batches_relation() }}));
    end $im1$
    {%- endif %}
{%- endmacro %}

{#- Post-hook: the pending batches are applied. After a full build the table gets its planner
    statistics at once (its tests and the models downstream query it next). -#}
{% macro im1_mark_batches_applied() -%}
    insert into {{ this.schema }}.im1_applied_batches (model, batch_id, loaded_at)
    select '{{ this.identifier }}', batch_id, loaded_at from {{ im1_pending_batches_relation() }}
    on conflict do nothing
    {%- if not is_incremental() %};
    analyze {{ this }}
    {%- endif %}
{%- endmacro %}
