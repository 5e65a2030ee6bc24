{#- Current state of each EMIS patient record, one row per (organisation, patient):
    rows ordered by batch extract time, then ProcessingId, then file row; the latest wins and
    a latest row with Deleted = true removes the patient (left the extract's scope). -#}
with

source as (
    select p.*, b.extract_ts
    from {{ source('raw_emis', 'admin_patient') }} as p
    inner join {{ source('ingest', 'batches') }} as b on b.batch_id = p._batch_id
),

ranked as (
    select
        *,
        row_number() over (
            partition by {{ emis_guid('organisationguid') }}, {{ emis_guid('patientguid') }}
            order by extract_ts desc, {{ emis_int('processingid') }} desc nulls last, _row_number desc
        ) as recency
    from source
),

renamed as (
    select
        ---------- ids
        {{ emis_guid('organisationguid') }}                as organisation_guid,
        {{ emis_guid('patientguid') }}                     as patient_guid,
        {{ emis_guid('personguid') }}                      as person_guid,
        _organisation                                      as practice_code,
        {{ emis_text('nhsnumber') }}                       as nhs_number,
        {{ emis_guid('usualgpuserinroleguid') }}           as usual_gp_user_in_role_guid,
        ---------- demographics
        {{ emis_text('sex') }}                             as sex_code,
        case upper({{ emis_text('sex') }})
            when 'M' then 'male' when 'F' then 'female' when 'I' then 'indeterminate' else 'unknown'
        end                                                as sex,
        {{ emis_date('dateofbirth') }}                     as date_of_birth,
        {{ emis_date('dateofdeath') }}                     as date_of_death,
        ---------- registration
        {{ emis_text('patienttypedescription') }}          as patient_type,
        {{ emis_date('dateofregistration') }}              as registration_start_date,
        {{ emis_date('dateofdeactivation') }}              as registration_end_date,
        coalesce({{ emis_bool('dummytype') }}, false)      as is_dummy,
        coalesce({{ emis_bool('spinesensitive') }}, false) as is_spine_sensitive,
        coalesce({{ emis_bool('isconfidential') }}, false) as is_confidential,
        ---------- lineage
        {{ emis_int('processingid') }}                     as processing_id,
        _feed_id                                           as feed_id,
        _batch_id                                          as batch_id,
        extract_ts,
        coalesce({{ emis_bool('deleted') }}, false)        as is_deleted
    from ranked
    where recency = 1
)

select * from renamed
where not is_deleted
