{#- Current state of the organisations SystmOne refers to (SROrganisation), one row per practice and RowIdentifier. Reference data of the feed.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes. -#}
with

current_rows as (
    {{ tpp_current_rows('srorganisation') }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}     as row_identifier,
        {{ tpp_text('name') }}                as name,
        {{ tpp_code('id') }}                  as id,
        {{ tpp_text('housename') }}           as house_name,
        {{ tpp_text('housenumber') }}         as house_number,
        {{ tpp_text('nameofroad') }}          as name_of_road,
        {{ tpp_text('nameoflocality') }}      as name_of_locality,
        {{ tpp_text('nameoftown') }}          as name_of_town,
        {{ tpp_text('nameofcounty') }}        as name_of_county,
        {{ tpp_text('fullpostcode') }}        as full_post_code,
        {{ tpp_text('telephone') }}           as telephone,
        {{ tpp_text('secondarytelephone') }}  as secondary_telephone,
        {{ tpp_text('fax') }}                 as fax,
        {{ tpp_bool('madeobsolete') }}        as made_obsolete,
        {{ tpp_code('idtrust') }}             as id_trust,
        {{ tpp_code('idccg') }}               as id_ccg,
        ---------- lineage
        {{ tpp_lineage() }},
        false as is_shared_care
    from current_rows
)

select * from renamed
