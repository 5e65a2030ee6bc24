{#- The only model that reads NHS numbers: each patient's pseudonymous person_key, HMAC-SHA256 of
    the normalised NHS number with the secret key (macros/pseudonym.sql). The NHS number itself is
    not kept. The same NHS number gives the same person_key at every practice and supplier. -#}
{{ config(pre_hook="{{ im1_require_pseudonym_key() }}") }}

with

emis as (
    select
        'emis' as supplier,
        practice_code,
        patient_guid as patient_id,
        {{ im1_person_key('nhs_number') }} as person_key
    from {{ ref('stg_emis__admin_patient') }}
),

tpp as (
    select
        'tpp' as supplier,
        practice_code,
        cast(row_identifier as text) as patient_id,
        {{ im1_person_key('nhs_number') }} as person_key
    from {{ ref('stg_tpp__srpatient') }}
    where row_identifier is not null
)

select supplier, practice_code, patient_id, person_key from emis
union all
select supplier, practice_code, patient_id, person_key from tpp
