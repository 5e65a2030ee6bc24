{#- What the incremental activity models re-derive on a run (see incremental_current.sql). -#}

{#- int_appointments ---------------------------------------------------------------------------
    Lookup: each session's clinician and HCP type (int_appointment_sessions). -#}
{% macro int_appointments_lookup() -%}
    select concat_ws(chr(31), supplier, practice_code, session_id) as lookup_key,
           json_build_array(practitioner_id, hcp_type)::text as lookup_value
    from {{ ref('int_appointment_sessions') }}
{%- endmacro %}

{#- Slots changed in the base model since the last run, and the appointments of sessions whose
    clinician (or the clinician's HCP type) changed. -#}
{% macro int_appointments_touched() -%}
    select 'emis'::text as supplier, b.practice_code, b.slot_guid as appointment_id
    from {{ ref('base_emis__appointment_slot') }} as b
    where {{ im1_applied_since('b.applied_at') }}
    union all
    select t.supplier, t.practice_code, t.appointment_id
    from {{ this }} as t
    inner join {{ im1_changed_relation() }} as c
        on c.supplier = t.supplier and c.practice_code = t.practice_code and c.session_id = t.session_id
    union all
    -- TPP staging is not incremental: its appointments are re-derived on every run
    select t.supplier, t.practice_code, t.appointment_id
    from {{ this }} as t
    where t.supplier = 'tpp'
{%- endmacro %}

{% macro int_appointments_pre_hook() -%}
    {{ im1_prepare_touched(['supplier', 'practice_code', 'appointment_id'], int_appointments_touched(),
                           im1_changed_lookups(int_appointments_lookup(), ['supplier', 'practice_code', 'session_id'])) }}
{%- endmacro %}

{% macro int_appointments_post_hook() -%}
    {{ im1_save_lookup_snapshot(int_appointments_lookup()) }}
{%- endmacro %}

{#- int_medication_issues ----------------------------------------------------------------------
    Lookup: each drug code's dm+d code and name (int_drug_codes). -#}
{% macro int_medication_issues_lookup() -%}
    select concat_ws(chr(31), supplier, source_code) as lookup_key,
           json_build_array(dmd_code, drug_name)::text as lookup_value
    from {{ ref('int_drug_codes') }}
{%- endmacro %}

{#- Issue records changed in the base model since the last run, and the issues of drug codes that
    now map to another dm+d code or name (e.g. the Coding_DrugCode row arrived after the issue). -#}
{% macro int_medication_issues_touched() -%}
    select 'emis'::text as supplier, b.practice_code, b.issue_record_guid as issue_id
    from {{ ref('base_emis__prescribing_issuerecord') }} as b
    where {{ im1_applied_since('b.applied_at') }}
    union all
    select t.supplier, t.practice_code, t.issue_id
    from {{ this }} as t
    inner join {{ im1_changed_relation() }} as c
        on c.supplier = t.supplier and c.source_code = t.source_code
    union all
    -- TPP staging is not incremental: its issues are re-derived on every run
    select t.supplier, t.practice_code, t.issue_id
    from {{ this }} as t
    where t.supplier = 'tpp'
{%- endmacro %}

{% macro int_medication_issues_pre_hook() -%}
    {{ im1_prepare_touched(['supplier', 'practice_code', 'issue_id'], int_medication_issues_touched(),
                           im1_changed_lookups(int_medication_issues_lookup(), ['supplier', 'source_code'])) }}
{%- endmacro %}

{% macro int_medication_issues_post_hook() -%}
    {{ im1_save_lookup_snapshot(int_medication_issues_lookup()) }}
{%- endmacro %}

{#- int_medication_authorisations ---------------------------------------------------------------
    Lookup: the same drug-code map as int_medication_issues (int_drug_codes), kept apart. -#}
{#- Drug records changed in the base model since the last run, and the authorisations of drug codes
    that now map to another dm+d code or name. -#}
{% macro int_medication_authorisations_touched() -%}
    select 'emis'::text as supplier, b.practice_code, b.drug_record_guid as authorisation_id
    from {{ ref('base_emis__prescribing_drugrecord') }} as b
    where {{ im1_applied_since('b.applied_at') }}
    union all
    select t.supplier, t.practice_code, t.authorisation_id
    from {{ this }} as t
    inner join {{ im1_changed_relation() }} as c
        on c.supplier = t.supplier and c.source_code = t.source_code
    union all
    -- TPP staging is not incremental: its authorisations are re-derived on every run
    select t.supplier, t.practice_code, t.authorisation_id
    from {{ this }} as t
    where t.supplier = 'tpp'
{%- endmacro %}

{% macro int_medication_authorisations_pre_hook() -%}
    {{ im1_prepare_touched(['supplier', 'practice_code', 'authorisation_id'], int_medication_authorisations_touched(),
                           im1_changed_lookups(int_medication_issues_lookup(), ['supplier', 'source_code'])) }}
{%- endmacro %}

{% macro int_medication_authorisations_post_hook() -%}
    {{ im1_save_lookup_snapshot(int_medication_issues_lookup()) }}
{%- endmacro %}

{#- SystmOne sends a medication quantity as one text, e.g. '28 tablet': its number and its unit. -#}
{% macro tpp_quantity_number(col) -%}
    cast(nullif(substring(trim({{ col }}) from '^[0-9]+(?:\.[0-9]+)?'), '') as numeric)
{%- endmacro %}

{% macro tpp_quantity_unit(col) -%}
    nullif(trim(regexp_replace(trim({{ col }}), '^[0-9]+(?:\.[0-9]+)?', '')), '')
{%- endmacro %}
