{#- The supplier values no GPAD mapping seed (seeds/gpad) lists, one row per supplier, practice,
    mapping and value, with how many appointments (or staff profiles) carry it: what an operator
    adds to the seeds. Not counted silently anywhere: an unmapped status or context type is not
    counted by GPAD (int_appointments.is_gpad_counted false), an unmapped mode is reported as
    Unknown, an unmapped role gives HCP type Unknown. The warn-level test
    gpad_unmapped_supplier_values (tests/) lists these rows on every build. SystmOne modes cannot be
    unmapped here: the appointment method is the flag the seed lists, every other flag is not a mode. -#}
with

appointments as (
    select supplier, practice_code, status_source, status_harmonised, mode_source, national_mode,
           context_type, gpad_context_type
    from {{ ref('int_appointments') }}
),

unmapped as (
    select supplier, practice_code, 'status' as mapping, 'gpad_appointment_status_map' as seed,
           coalesce(status_source, '(none)') as source_value, count(*) as records
    from appointments
    where status_harmonised = 'unmapped'
    group by supplier, practice_code, status_source
    union all
    select supplier, practice_code, 'mode', 'gpad_appointment_mode_map', mode_source, count(*)
    from appointments
    where mode_source is not null and national_mode is null
    group by supplier, practice_code, mode_source
    union all
    select supplier, practice_code, 'context_type', 'gpad_context_type_map', context_type, count(*)
    from appointments
    where gpad_context_type = 'Unmapped'
    group by supplier, practice_code, context_type
    union all
    select supplier, practice_code, 'hcp_role', 'gpad_hcp_type_map', coalesce(role_code, '(none)'), count(*)
    from {{ ref('int_practitioners') }}
    where not is_role_mapped
    group by supplier, practice_code, role_code
)

select supplier, practice_code, mapping, seed, source_value, records
from unmapped
