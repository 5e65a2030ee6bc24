{#- Appointment rates per practice and month, overall and by mode and by HCP type, as NHS England's
    disclosure control has them (marts.md 5.4; casebook/publication.yml): each count is summed
    from the exact counts, then 0 stays 0, 1-7 is suppressed and the rest rounded to the nearest
    5; a percentage is computed from the ROUNDED numerator and the ROUNDED denominator and is
    withheld when either is suppressed (or the denominator is 0).

      DNA rate      = DNA / (Attended + DNA)                 (marts.md 2.2, GP contract KPIs)
      same-day share = Same Day lead time / all appointments  (attended, DNA and unknown) -#}
with

exact as (
    select
        practice_code,
        appointment_month,
        {{ pub_all('gpad_mode') }} as gpad_mode,
        {{ pub_all('hcp_type') }} as hcp_type,
        sum(appointments) as appointments,
        sum(appointments) filter (where gpad_status = 'Attended') as attended,
        sum(appointments) filter (where gpad_status = 'DNA') as dna,
        sum(appointments) filter (where gpad_status = 'Unknown') as unknown_status,
        sum(appointments) filter (where gpad_status in ('Attended', 'DNA')) as attended_or_dna,
        sum(appointments) filter (where lead_time_band = 'Same Day') as same_day
    from {{ ref('mart_appointments') }}
    group by practice_code, appointment_month, grouping sets ((), (gpad_mode), (hcp_type))
),

zeroed as (
    select
        practice_code, appointment_month, gpad_mode, hcp_type, appointments,
        coalesce(attended, 0) as attended,
        coalesce(dna, 0) as dna,
        coalesce(unknown_status, 0) as unknown_status,
        coalesce(attended_or_dna, 0) as attended_or_dna,
        coalesce(same_day, 0) as same_day
    from exact
)

select
    practice_code,
    appointment_month,
    gpad_mode,
    hcp_type,
    {{ sdc_count('appointments') }} as appointments,
    {{ sdc_count('attended') }} as attended,
    {{ sdc_count('dna') }} as dna,
    {{ sdc_count('unknown_status') }} as unknown_status,
    {{ sdc_count('attended_or_dna') }} as attended_or_dna,
    {{ sdc_rate('dna', 'attended_or_dna', digits=1) }} as dna_rate_pct,
    {{ sdc_count('same_day') }} as same_day,
    {{ sdc_rate('same_day', 'appointments', digits=1) }} as same_day_pct,
    {{ sdc_is_suppressed('appointments') }} or {{ sdc_is_suppressed('attended') }}
        or {{ sdc_is_suppressed('dna') }} or {{ sdc_is_suppressed('unknown_status') }}
        or {{ sdc_is_suppressed('attended_or_dna') }} or {{ sdc_is_suppressed('same_day') }} as is_suppressed
from zeroed
