{#- The clinician holding each appointment session, and their GPAD HCP type. An appointment's
    clinician is its session's (EMIS Appointment_Slot -> Appointment_Session ->
    Appointment_SessionUser -> Admin_UserInRole). A session with several users is attributed to
    one: a GP if any, else other practice staff, else unknown; ties by practitioner id. Small (one
    row per session), rebuilt every run; int_appointments re-derives the appointments whose
    session's clinician changed. -#}
with

session_users as (
    select
        'emis' as supplier,
        su.practice_code,
        su.session_guid as session_id,
        su.user_in_role_guid as practitioner_id
    from {{ ref('stg_emis__appointment_sessionuser') }} as su
),

ranked as (
    select
        su.supplier,
        su.practice_code,
        su.session_id,
        su.practitioner_id,
        coalesce(p.hcp_type, 'Unknown') as hcp_type,
        coalesce(p.hcp_role, 'Unknown') as hcp_role,
        count(*) over (partition by su.supplier, su.practice_code, su.session_id) as session_users,
        row_number() over (
            partition by su.supplier, su.practice_code, su.session_id
            order by case coalesce(p.hcp_type, 'Unknown') when 'GP' then 1 when 'Other Practice staff' then 2
                     else 3 end, su.practitioner_id
        ) as rank_in_session
    from session_users as su
    left join {{ ref('int_practitioners') }} as p
        on p.supplier = su.supplier and p.practitioner_id = su.practitioner_id
)

select supplier, practice_code, session_id, practitioner_id, hcp_type, hcp_role, session_users
from ranked
where rank_in_session = 1
