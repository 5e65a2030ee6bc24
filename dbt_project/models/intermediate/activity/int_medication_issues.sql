{#- Issued medication items (one row per issue: a prescription item given to the patient), with
    the dm+d code and drug name. EMIS: Prescribing_IssueRecord, drug from Coding_DrugCode. TPP:
    SRPrimaryCareMedication, which carries the dm+d code and name itself (shared-care rows are
    not the practice's and are left out).

    Incremental (macros/README.md): each run re-derives the records applied since its last run
    (base_emis__prescribing_issuerecord,
    base_tpp__srprimarycaremedication), those of drug codes that now map differently and those
    of SystmOne patients whose GMS registrations elsewhere changed; a deleted record is removed. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='im1_replace',
    unique_key=['supplier', 'practice_code', 'issue_id'],
    on_schema_change='fail',
    indexes=[
        {'columns': ['supplier', 'practice_code', 'issue_id'], 'unique': true},
        {'columns': ['supplier', 'source_code']},
        {'columns': ['applied_at']},
    ],
    meta={'im1_incremental': {
        'sources': [
            {'ref': 'base_emis__prescribing_issuerecord', 'key': ["'emis'", 'practice_code', 'issue_record_guid']},
            {'ref': 'base_tpp__srprimarycaremedication', 'key': ["'tpp'", 'practice_code', 'row_identifier']},
        ],
        'lookups': [
            {'name': 'im1_lookup_drug_codes', 'key': ['supplier', 'source_code'], 'via': 'this'},
            {'name': 'im1_lookup_tpp_gms_elsewhere', 'key': ['practice_code', 'id_patient'], 'via': 'base_tpp__srprimarycaremedication'},
        ],
    }},
    pre_hook="{{ im1_incremental_begin() }}",
    post_hook="{{ im1_incremental_end() }}",
) }}
-- depends_on (read by the incremental hooks): {{ ref('base_tpp__srprimarycaremedication') }}, {{ ref('stg_tpp__gms_organisations') }}

{%- set delta = im1_incremental() %}

with

drug_codes as (
    select supplier, source_code, dmd_code, drug_name from {{ ref('int_drug_codes') }}
),

emis_issues as (
    select b.*
    from {{ ref('base_emis__prescribing_issuerecord') }} as b
    {%- if delta %}
    inner join {{ im1_touched() }} as k
        on k.supplier = 'emis' and k.practice_code = b.practice_code and k.issue_id = b.issue_record_guid
    {%- endif %}
    where not b.is_deleted
),

emis as (
    select
        'emis' as supplier,
        i.practice_code,
        i.issue_record_guid as issue_id,
        i.patient_guid as patient_id,
        i.drug_record_guid as authorisation_id,
        i.effective_date as issue_date,
        cast(i.code_id as text) as source_code,
        d.dmd_code,
        d.drug_name,
        i.quantity,
        i.quantity_unit,
        i.course_duration_in_days as course_duration_days,
        i.estimated_nhs_cost as estimated_cost,
        coalesce(i.is_confidential, false) as is_confidential,
        coalesce(i.is_privately_prescribed, false) as is_privately_prescribed,
        i.issue_method_description as issue_method,
        i.clinician_user_in_role_guid as practitioner_id,
        i.applied_at
    from emis_issues as i
    left join drug_codes as d on d.supplier = 'emis' and d.source_code = cast(i.code_id as text)
),

tpp as (
    select
        'tpp' as supplier,
        m.practice_code,
        cast(m.row_identifier as text) as issue_id,
        cast(m.id_patient as text) as patient_id,
        cast(m.id_repeat_template as text) as authorisation_id,
        cast(m.date_event as date) as issue_date,
        cast(null as text) as source_code,
        cast(m.id_multi_lex_dmd as text) as dmd_code,
        m.name_of_medication as drug_name,
        {{ tpp_quantity_number('m.medication_quantity') }} as quantity,
        {{ tpp_quantity_unit('m.medication_quantity') }} as quantity_unit,
        cast(m.date_medication_end - m.date_medication_start as bigint) as course_duration_days,
        cast(null as numeric) as estimated_cost,
        false as is_confidential,
        false as is_privately_prescribed,
        cast(null as text) as issue_method,
        cast(m.id_profile_entered_by as text) as practitioner_id,
        m.applied_at
    from {{ ref('stg_tpp__srprimarycaremedication') }} as m
    {%- if delta %}
    inner join {{ im1_touched() }} as k
        on k.supplier = 'tpp' and k.practice_code = m.practice_code
       and m.row_identifier = {{ im1_touched_key('k', 'issue_id', 'bigint', 'tpp') }}
    {%- endif %}
    where not m.is_shared_care
      and m.id_patient is not null
      and m.date_event is not null
),

issues as (
    select * from emis
    union all
    select * from tpp
)

select
    supplier,
    practice_code,
    issue_id,
    patient_id,
    authorisation_id,
    issue_date,
    cast(date_trunc('month', issue_date) as date) as issue_month,
    source_code,
    dmd_code,
    drug_name,
    quantity,
    quantity_unit,
    course_duration_days,
    estimated_cost,
    is_confidential,
    is_privately_prescribed,
    issue_method,
    practitioner_id,
    applied_at
from issues
