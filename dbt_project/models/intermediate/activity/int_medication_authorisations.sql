{#- Medication authorisations (courses): what a prescriber authorised, acute or repeat, with its
    dm+d code, one row per supplier, practice and authorisation. Issues (int_medication_issues)
    are made against them. EMIS: Prescribing_DrugRecord, drug from Coding_DrugCode. TPP:
    SRRepeatTemplate (repeat templates; SystmOne records an acute item as an issue only), with the
    dm+d code and name on the row; shared-care rows are left out.

    Incremental (macros/README.md): each run re-derives the records applied since its last run
    (base_emis__prescribing_drugrecord,
    base_tpp__srrepeattemplate), those of drug codes that now map differently and those
    of SystmOne patients whose GMS registrations elsewhere changed; a deleted record is removed. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='im1_replace',
    unique_key=['supplier', 'practice_code', 'authorisation_id'],
    on_schema_change='fail',
    indexes=[
        {'columns': ['supplier', 'practice_code', 'authorisation_id'], 'unique': true},
        {'columns': ['supplier', 'source_code']},
        {'columns': ['applied_at']},
    ],
    meta={'im1_incremental': {
        'sources': [
            {'ref': 'base_emis__prescribing_drugrecord', 'key': ["'emis'", 'practice_code', 'drug_record_guid']},
            {'ref': 'base_tpp__srrepeattemplate', 'key': ["'tpp'", 'practice_code', 'row_identifier']},
        ],
        'lookups': [
            {'name': 'im1_lookup_drug_codes', 'key': ['supplier', 'source_code'], 'via': 'this'},
            {'name': 'im1_lookup_tpp_gms_elsewhere', 'key': ['practice_code', 'id_patient'], 'via': 'base_tpp__srrepeattemplate'},
        ],
    }},
    pre_hook="{{ im1_incremental_begin() }}",
    post_hook="{{ im1_incremental_end() }}",
) }}
-- depends_on (read by the incremental hooks): {{ ref('base_tpp__srrepeattemplate') }}, {{ ref('stg_tpp__gms_organisations') }}

{%- set delta = im1_incremental() %}

with

drug_codes as (
    select supplier, source_code, dmd_code, drug_name from {{ ref('int_drug_codes') }}
),

emis_records as (
    select b.*
    from {{ ref('base_emis__prescribing_drugrecord') }} as b
    {%- if delta %}
    inner join {{ im1_touched() }} as k
        on k.supplier = 'emis' and k.practice_code = b.practice_code and k.authorisation_id = b.drug_record_guid
    {%- endif %}
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
        t.applied_at
    from {{ ref('stg_tpp__srrepeattemplate') }} as t
    {%- if delta %}
    inner join {{ im1_touched() }} as k
        on k.supplier = 'tpp' and k.practice_code = t.practice_code
       and t.row_identifier = {{ im1_touched_key('k', 'authorisation_id', 'bigint', 'tpp') }}
    {%- endif %}
    where not t.is_shared_care
      and t.id_patient is not null
)

select * from emis
union all
select * from tpp
