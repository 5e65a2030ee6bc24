{#- Medication authorisations (courses): what a prescriber authorised, acute or repeat, with its
    dm+d code, one row per supplier, practice and authorisation. Issues (int_medication_issues)
    are made against them. EMIS: Prescribing_DrugRecord, drug from Coding_DrugCode. TPP:
    SRRepeatTemplate (repeat templates; SystmOne records an acute item as an issue only), with the
    dm+d code and name on the row; shared-care rows are left out.

    Incremental, as int_medication_issues: each run re-derives only the EMIS drug records changed
    since the last run (base_emis__prescribing_drugrecord.applied_at) or whose drug code now maps
    differently, and removes the deleted ones (macros/activity.sql, macros/incremental_current.sql).
    TPP staging is not incremental yet, so the TPP rows are re-derived on every run. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['supplier', 'practice_code', 'authorisation_id'],
    on_schema_change='fail',
    indexes=[
        {'columns': ['supplier', 'practice_code', 'authorisation_id'], 'unique': true},
        {'columns': ['supplier', 'source_code']},
        {'columns': ['applied_at']},
    ],
    pre_hook="{{ int_medication_authorisations_pre_hook() }}",
    post_hook="{{ im1_drug_code_post_hook() }}",
) }}

with

drug_codes as (
    select supplier, source_code, dmd_code, drug_name from {{ ref('int_drug_codes') }}
),

emis_records as (
    select b.*
    from {{ ref('base_emis__prescribing_drugrecord') }} as b
    {% if is_incremental() %}
    inner join {{ im1_touched_relation() }} as k
        on k.supplier = 'emis' and k.practice_code = b.practice_code and k.authorisation_id = b.drug_record_guid
    {% endif %}
    where not b.is_deleted
),

emis as (
    select
        'emis' as supplier,
        r.practice_code,
        r.drug_record_guid as authorisation_id,
        r.patient_guid as patient_id,
        r.effective_date as start_date,
        cast(r.code_id as text) as source_code,
        d.dmd_code,
        d.drug_name,
        lower(r.prescription_type) as authorisation_type,
        coalesce(r.is_active, false) as is_active,
        r.cancellation_date as end_date,
        r.quantity,
        r.quantity_unit,
        r.number_of_issues,
        r.number_of_issues_authorised,
        coalesce(r.is_confidential, false) as is_confidential,
        r.clinician_user_in_role_guid as practitioner_id,
        r.applied_at
    from emis_records as r
    left join drug_codes as d on d.supplier = 'emis' and d.source_code = cast(r.code_id as text)
),

tpp as (
    select
        'tpp' as supplier,
        t.practice_code,
        cast(t.row_identifier as text) as authorisation_id,
        cast(t.id_patient as text) as patient_id,
        t.date_medication_template_start as start_date,
        cast(null as text) as source_code,
        cast(t.id_multi_lex_dmd as text) as dmd_code,
        t.name_of_medication as drug_name,
        'repeat' as authorisation_type,
        coalesce(t.drug_status = 'Active', t.date_medication_template_end is null) as is_active,
        t.date_medication_template_end as end_date,
        {{ tpp_quantity_number('t.medication_quantity') }} as quantity,
        {{ tpp_quantity_unit('t.medication_quantity') }} as quantity_unit,
        cast(null as bigint) as number_of_issues,
        cast(t.max_issues as bigint) as number_of_issues_authorised,
        false as is_confidential,
        cast(t.id_profile_entered_by as text) as practitioner_id,
        cast('{{ run_started_at }}' as timestamptz) as applied_at
    from {{ ref('stg_tpp__srrepeattemplate') }} as t
    where not t.is_shared_care
      and t.id_patient is not null
)

select * from emis
union all
select * from tpp
