{#- Appointments in General Practice (GPAD style): appointments per practice and appointment month
    by GPAD status, mode, HCP type and booking lead-time band (marts.md 4.6).

    Counted: booked appointments on or before the practice's reference date (the data date of its
    latest loaded extract) whose status is Attended, DNA or Unknown (still booked after the day),
    in care-related slots. Cancelled, unbooked and blocked slots, and appointments after the
    reference date, are not counted. Unsuppressed: BI reads published.pub_appointments. -#}
with

counted as (
    select
        a.practice_code,
        a.appointment_month,
        a.gpad_status,
        a.gpad_mode,
        a.hcp_type,
        a.lead_time_band
    from {{ ref('int_appointments') }} as a
    inner join {{ ref('int_reference_dates') }} as r
        on r.supplier = a.supplier and r.practice_code = a.practice_code
    where a.is_gpad_counted
      and a.appointment_date <= r.reference_date
)

select
    practice_code,
    appointment_month,
    gpad_status,
    gpad_mode,
    hcp_type,
    lead_time_band,
    count(*) as appointments
from counted
group by practice_code, appointment_month, gpad_status, gpad_mode, hcp_type, lead_time_band
