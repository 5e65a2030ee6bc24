{#- Current state of SystmOne's code mappings (SRMapping: coded column values such as appointment status), one row per practice and RowIdentifier. Reference data sent without a manifest row.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, SRMapping has no RemovedData. -#}
with

current_rows as (
    {{ tpp_current_rows('srmapping', removed_data=false) }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}   as row_identifier,
        {{ tpp_bigint('idmappinggroup') }}  as id_mapping_group,
        {{ tpp_text('mapping') }}           as mapping,
        ---------- lineage
        {{ tpp_lineage() }},
        false as is_shared_care
    from current_rows
)

select * from renamed
