{#- Current state of each SystmOne staff profile (SRStaffMemberProfile: a staff member's role at an organisation), one row per practice and RowIdentifier. Reference data of the feed.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes. -#}
with

current_rows as (
    {{ tpp_current_rows('srstaffmemberprofile') }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}             as row_identifier,
        {{ tpp_timestamp('dateprofilecreated') }}     as date_profile_created,
        {{ tpp_bigint('idprofilecreatedby') }}        as id_profile_created_by,
        {{ tpp_bigint('idstaffmemberprofilerole') }}  as id_staff_member_profile_role,
        {{ tpp_text('staffrole') }}                   as staff_role,
        {{ tpp_date('dateemploymentstart') }}         as date_employment_start,
        {{ tpp_date('dateemploymentend') }}           as date_employment_end,
        {{ tpp_text('ppaid') }}                       as ppaid,
        {{ tpp_text('gplocalcode') }}                 as gp_local_code,
        {{ tpp_bigint('idstaffmember') }}             as id_staff_member,
        {{ tpp_code('idorganisation') }}              as id_organisation,
        {{ tpp_text('gmpid') }}                       as gmp_id,
        ---------- lineage
        {{ tpp_lineage() }},
        false as is_shared_care
    from current_rows
)

select * from renamed
