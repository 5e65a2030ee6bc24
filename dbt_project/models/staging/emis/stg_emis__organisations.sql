{#- Current state of each EMIS organisation in the sharing agreement (one row per organisation).
    Admin_Organisation has no Deleted column: the latest delivered row is the current one. -#}
with

source as (
    select o.*, b.extract_ts
    from {{ source('raw_emis', 'admin_organisation') }} as o
    inner join {{ source('ingest', 'batches') }} as b on b.batch_id = o._batch_id
),

ranked as (
    select
        *,
        row_number() over (
            partition by {{ emis_guid('organisationguid') }}
            order by extract_ts desc, {{ emis_int('processingid') }} desc nulls last, _row_number desc
        ) as recency
    from source
),

renamed as (
    select
        ---------- ids
        {{ emis_guid('organisationguid') }}           as organisation_guid,
        {{ emis_text('odscode') }}                    as ods_code,
        {{ emis_int('cdb') }}                         as cdb,
        {{ emis_guid('parentorganisationguid') }}     as parent_organisation_guid,
        {{ emis_guid('ccgorganisationguid') }}        as ccg_organisation_guid,
        {{ emis_guid('mainlocationguid') }}           as main_location_guid,
        ---------- attributes
        {{ emis_text('organisationname') }}           as organisation_name,
        {{ emis_text('organisationtype') }}           as organisation_type,
        ---------- dates
        {{ emis_date('opendate') }}                   as open_date,
        {{ emis_date('closedate') }}                  as close_date,
        ---------- lineage
        _feed_id                                      as feed_id,
        _batch_id                                     as batch_id,
        extract_ts
    from ranked
    where recency = 1
)

select * from renamed
