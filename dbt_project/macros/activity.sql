{#- What the incremental activity models re-derive on a run (see incremental_current.sql). -#}

{#- One incremental activity model: ``key`` is its record key column, ``base`` and ``base_id`` the
    EMIS base model and its record id, ``lookup_sql`` the small lookup the model joins and
    ``lookup_parts`` the columns that lookup's key splits into. A run re-derives:
      * the EMIS records changed in the base model since the model's last run,
      * the rows whose looked-up value changed (the lookup against the model's saved copy),
      * every TPP row (TPP staging is not incremental yet). -#}
{% macro im1_activity_touched(key, base, base_id, lookup_parts) -%}
    select 'emis'::text as supplier, b.practice_code, b.{{ base_id }} as {{ key }}
    from {{ ref(base) }} as b
    where {{ im1_applied_since('b.applied_at') }}
    union all
    select t.supplier, t.practice_code, t.{{ key }}
    from {{ this }} as t
    inner join {{ im1_changed_relation() }} as c
        on {% for c in lookup_parts %}c.{{ c }} = t.{{ c }}{% if not loop.last %} and {% endif %}{% endfor %}
    union all
    select t.supplier, t.practice_code, t.{{ key }}
    from {{ this }} as t
    where t.supplier = 'tpp'
{%- endmacro %}

{% macro im1_activity_pre_hook(key, base, base_id, lookup_sql, lookup_parts) -%}
    {{ im1_prepare_touched(['supplier', 'practice_code', key], im1_activity_touched(key, base, base_id, lookup_parts),
                           im1_changed_lookups(lookup_sql, lookup_parts)) }}
{%- endmacro %}

{#- int_appointments: slots changed, and the appointments of sessions whose clinician (or the
    clinician's HCP type) changed. Lookup: each session's clinician and HCP type. -#}
{% macro int_appointments_lookup() -%}
    select concat_ws(chr(31), supplier, practice_code, session_id) as lookup_key,
           json_build_array(practitioner_id, hcp_type)::text as lookup_value
    from {{ ref('int_appointment_sessions') }}
{%- endmacro %}

{% macro int_appointments_pre_hook() -%}
    {{ im1_activity_pre_hook('appointment_id', 'base_emis__appointment_slot', 'slot_guid',
                             int_appointments_lookup(), ['supplier', 'practice_code', 'session_id']) }}
{%- endmacro %}

{% macro int_appointments_post_hook() -%}
    {{ im1_save_lookup_snapshot(int_appointments_lookup()) }}
{%- endmacro %}

{#- int_medication_issues and int_medication_authorisations: issue / drug records changed, and the
    rows of drug codes that now map to another dm+d code or name (e.g. the Coding_DrugCode row
    arrived after the record). Lookup: each drug code's dm+d code and name; each model keeps its
    own saved copy. -#}
{% macro im1_drug_code_lookup() -%}
    select concat_ws(chr(31), supplier, source_code) as lookup_key,
           json_build_array(dmd_code, drug_name)::text as lookup_value
    from {{ ref('int_drug_codes') }}
{%- endmacro %}

{% macro int_medication_issues_pre_hook() -%}
    {{ im1_activity_pre_hook('issue_id', 'base_emis__prescribing_issuerecord', 'issue_record_guid',
                             im1_drug_code_lookup(), ['supplier', 'source_code']) }}
{%- endmacro %}

{% macro int_medication_authorisations_pre_hook() -%}
    {{ im1_activity_pre_hook('authorisation_id', 'base_emis__prescribing_drugrecord', 'drug_record_guid',
                             im1_drug_code_lookup(), ['supplier', 'source_code']) }}
{%- endmacro %}

{% macro im1_drug_code_post_hook() -%}
    {{ im1_save_lookup_snapshot(im1_drug_code_lookup()) }}
{%- endmacro %}

{#- SystmOne sends a medication quantity as one text, e.g. '28 tablet': its number and its unit. -#}
{% macro tpp_quantity_number(col) -%}
    cast(nullif(substring(trim({{ col }}) from '^[0-9]+(?:\.[0-9]+)?'), '') as numeric)
{%- endmacro %}

{% macro tpp_quantity_unit(col) -%}
    nullif(trim(regexp_replace(trim({{ col }}), '^[0-9]+(?:\.[0-9]+)?', '')), '')
{%- endmacro %}
