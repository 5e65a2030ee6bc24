{#- marts.mart_appointments for BI: every count through the NHS small-number rule (macros/sdc.sql). -#}
select
    practice_code,
    appointment_month,
    gpad_status,
    gpad_mode,
    hcp_type,
    lead_time_band,
    {{ sdc_count('appointments') }} as appointments,
    {{ sdc_is_suppressed('appointments') }} as is_suppressed
from {{ ref('mart_appointments') }}
