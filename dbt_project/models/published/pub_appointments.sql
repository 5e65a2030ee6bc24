{#- marts.mart_appointments for BI, with totals: every combination of each dimension (GPAD status,
    mode, HCP type, lead-time band) and 'ALL' (a CUBE), per practice and month. Every count, the
    totals included, is summed from the exact (unrounded) counts and then put through the NHS
    small-number rule (macros/sdc.sql). A BI tool filters the dimensions it does not show to
    'ALL'; it never adds rows up. Rates: pub_appointment_rates. -#}
select
    practice_code,
    appointment_month,
    {{ pub_all('gpad_status') }} as gpad_status,
    {{ pub_all('gpad_mode') }} as gpad_mode,
    {{ pub_all('hcp_type') }} as hcp_type,
    {{ pub_all('lead_time_band') }} as lead_time_band,
    {{ sdc_count('sum(appointments)') }} as appointments,
    {{ sdc_is_suppressed('sum(appointments)') }} as is_suppressed
from {{ ref('mart_appointments') }}
group by practice_code, appointment_month, cube (gpad_status, gpad_mode, hcp_type, lead_time_band)
