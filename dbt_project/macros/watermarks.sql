{#- Watermarks of the incremental intermediate models.

    A model such as int_observations reads, per source, only the base rows applied after its last
    run: applied_at in (watermark, run_started_at]. The watermark is kept here rather than taken
    from max(applied_at) of the model itself, because the model keeps only some rows (those the
    marts need) and drops tombstones, so its own maximum would lag and each run would re-read more.
    ``fingerprint`` identifies what the model keeps (e.g. the code lists); when it changes, the
    model re-reads everything. -#}

{#- Created once per invocation (on-run-start), next to staging.im1_applied_batches. -#}
{% macro im1_watermarks_table() -%}
    create table if not exists {{ generate_schema_name('staging', none) }}.im1_watermarks (
        model       text        not null,
        source      text        not null,
        applied_at  timestamptz not null,
        fingerprint text,
        updated_at  timestamptz not null default now(),
        primary key (model, source)
    )
{%- endmacro %}

{#- The applied_at up to which ``source`` has been read by this model, as a literal for the model
    SQL, or none when the model must read everything (first build, full refresh, changed
    fingerprint). Runs at compile time, so the filter is a constant the planner can use with the
    index on applied_at. -#}
{% macro im1_watermark(source, fingerprint_sql) -%}
    {%- if not execute or not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set q -%}
        select w.applied_at::text
        from {{ generate_schema_name('staging', none) }}.im1_watermarks as w
        where w.model = '{{ this.identifier }}' and w.source = '{{ source }}'
          and w.fingerprint is not distinct from ({{ fingerprint_sql }})
    {%- endset -%}
    {%- set rows = run_query(q).rows -%}
    {{ return(rows[0][0] if rows | length > 0 else none) }}
{%- endmacro %}

{#- Post-hook: everything applied up to this run's start has been read. -#}
{% macro im1_save_watermark(source, fingerprint_sql) -%}
    insert into {{ generate_schema_name('staging', none) }}.im1_watermarks as w
        (model, source, applied_at, fingerprint, updated_at)
    select '{{ this.identifier }}', '{{ source }}', cast('{{ run_started_at }}' as timestamptz),
           ({{ fingerprint_sql }}), now()
    on conflict (model, source) do update
        set applied_at = excluded.applied_at, fingerprint = excluded.fingerprint, updated_at = excluded.updated_at
{%- endmacro %}

{#- Pre-hook: when the fingerprint changed (or no watermark exists), the model re-reads the source
    from scratch, so its rows from that source go first. -#}
{% macro im1_reset_if_fingerprint_changed(source, supplier, fingerprint_sql) -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where supplier = '{{ supplier }}'
      and not exists (
          select 1 from {{ generate_schema_name('staging', none) }}.im1_watermarks as w
          where w.model = '{{ this.identifier }}' and w.source = '{{ source }}'
            and w.fingerprint is not distinct from ({{ fingerprint_sql }})
      )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}


{#- Pre-hook of an incremental model fed by a supplier whose staging is not incremental (TPP):
    removes that supplier's rows so the run re-inserts its whole current state. -#}
{% macro im1_delete_supplier_rows(supplier) -%}
    {%- if is_incremental() -%}
    delete from {{ this }} where supplier = '{{ supplier }}'
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
