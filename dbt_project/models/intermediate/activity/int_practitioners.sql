{#- Practice staff (practitioners), one row per supplier, practice and practitioner, with the
    role they hold and its GPAD healthcare-professional (HCP) type. Names are not carried: no
    mart needs them. EMIS: Admin_UserInRole (a shared table in a multi-organisation feed, so the
    practice comes from the user's organisation). TPP: SRStaffMemberProfile (a practitioner is a
    staff profile, the id appointments and records refer to; a practice's extract lists the
    profiles it can see, so the practice is the one the file was loaded for). -#}
with

hcp_map as (
    select supplier, role_code, hcp_type from {{ ref('gpad_hcp_type_map') }}
),

emis_organisations as (
    select distinct on (organisation_guid) organisation_guid, ods_code
    from {{ ref('stg_emis__admin_organisation') }}
    where ods_code is not null
    order by organisation_guid, extract_ts desc
),

emis as (
    select
        'emis' as supplier,
        coalesce(o.ods_code, nullif(u.practice_code, '*')) as practice_code,
        u.user_in_role_guid as practitioner_id,
        u.job_category_code as role_code,
        u.job_category_name as role_name,
        u.contract_start_date,
        u.contract_end_date
    from {{ ref('stg_emis__admin_userinrole') }} as u
    left join emis_organisations as o on o.organisation_guid = u.organisation_guid
),

tpp as (
    select
        'tpp' as supplier,
        p.practice_code,
        cast(p.row_identifier as text) as practitioner_id,
        p.staff_role as role_code,
        p.staff_role as role_name,
        p.date_employment_start as contract_start_date,
        p.date_employment_end as contract_end_date
    from {{ ref('stg_tpp__srstaffmemberprofile') }} as p
),

practitioners as (
    select * from emis
    union all
    select * from tpp
)

select
    p.supplier,
    p.practice_code,
    p.practitioner_id,
    p.role_code,
    p.role_name,
    coalesce(m.hcp_type, 'Unknown') as hcp_type,
    m.hcp_type is not null as is_role_mapped,
    p.contract_start_date,
    p.contract_end_date
from practitioners as p
left join hcp_map as m on m.supplier = p.supplier and m.role_code = p.role_code
where p.practice_code is not null
