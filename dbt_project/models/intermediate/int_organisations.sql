{#- Organisations that send data: one row per supplier and ODS code (the practice_code of every
    other model), from EMIS Admin_Organisation. A multi-organisation feed delivers the table once
    for all its practices (practice_code '*'), so the ODS code comes from the row itself.
    TPP: SROrganisation. -#}
with

emis as (
    select distinct on (ods_code)
        'emis' as supplier,
        ods_code as practice_code,
        organisation_guid as organisation_id,
        organisation_name,
        organisation_type,
        open_date,
        close_date,
        parent_organisation_guid as parent_organisation_id,
        ccg_organisation_guid as ccg_organisation_id
    from {{ ref('stg_emis__admin_organisation') }}
    where ods_code is not null
    order by ods_code, extract_ts desc
),

-- SystmOne SROrganisation lists every organisation the practice's records refer to; the practice
-- itself is the row whose ID (ODS code) is the practice the extract was loaded for. SystmOne
-- sends no organisation type, dates or parent; MadeObsolete marks a closed organisation.
tpp as (
    select distinct on (id)
        'tpp' as supplier,
        id as practice_code,
        cast(row_identifier as text) as organisation_id,
        name as organisation_name,
        cast(null as text) as organisation_type,
        cast(null as date) as open_date,
        cast(null as date) as close_date,
        id_trust as parent_organisation_id,
        id_ccg as ccg_organisation_id
    from {{ ref('stg_tpp__srorganisation') }}
    where id = practice_code
    order by id, extract_ts desc
)

select * from emis
union all
select * from tpp
