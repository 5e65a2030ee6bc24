{#- Current state of each SystmOne staff member (SRStaffMember), one row per practice and RowIdentifier. Reference data of the feed.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes. -#}
with

current_rows as (
    {{ tpp_current_rows('srstaffmember') }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}  as row_identifier,
        {{ tpp_text('staffname') }}        as staff_name,
        {{ tpp_text('staffusername') }}    as staff_user_name,
        {{ tpp_text('nationalidtype') }}   as national_id_type,
        {{ tpp_text('idnational') }}       as id_national,
        {{ tpp_text('idsmartcard') }}      as id_smart_card,
        {{ tpp_bool('obsolete') }}         as obsolete,
        ---------- lineage
        {{ tpp_lineage() }},
        false as is_shared_care
    from current_rows
)

select * from renamed
