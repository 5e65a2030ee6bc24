{#- Practice staff (practitioners), one row per supplier, practice and practitioner, with the
    role they hold and its GPAD healthcare-professional (HCP) type. Names are not carried: no
    mart needs them. EMIS: Admin_UserInRole (a shared table in a multi-organisation feed, so the
    practice comes from the user's organisation). TPP: SRStaffMemberProfile (a practitioner is a
    staff profile, the id appointments and records refer to; a practice's extract lists the
    profiles it can see, so the practice is the one the file was loaded for).

    The role maps to GPAD's HCP type through the national job role codes (seed gpad_hcp_type_map):
    EMIS delivers the code (JobCategoryCode); SystmOne's StaffRole is text, matched to a code or,
    case-insensitively, to the code's national name. An unmatched role is HCP type 'Unknown'
    (is_role_mapped false) and is listed in int_gpad_unmapped. -#}
with

hcp_map as (
    select role_code, upper(role_name) as role_name_key, hcp_type, hcp_role from {{ ref('gpad_hcp_type_map') }}
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
    coalesce(m.hcp_type, n.hcp_type, 'Unknown') as hcp_type,
    coalesce(m.hcp_role, n.hcp_role, 'Unknown') as hcp_role,
    coalesce(m.hcp_type, n.hcp_type) is not null as is_role_mapped,
    p.contract_start_date,
    p.contract_end_date
from practitioners as p
left join hcp_map as m on m.role_code = upper(trim(p.role_code))
left join hcp_map as n on p.supplier = 'tpp' and m.role_code is null and n.role_name_key = upper(trim(p.role_code))
where p.practice_code is not null
