{#- Registered patients by practice, sex and 5-year age band (PRGP style) on the first of the
    month of the practice's reference date and of each of the 12 months before it (13 snapshots),
    as known on the reference date (the latest loaded extract).

    Counted on snapshot date S: registered on S (macros/registration.sql: Regular, start <= S,
    no end or end > S, alive on S, not a dummy patient). Age is completed years on S. Only
    non-empty groups have a row. A patient is counted once per snapshot even if two registration
    periods at the practice overlap (SystmOne can send overlapping GMS registrations). -#}
with

registered as (
    select
        s.practice_code,
        s.snapshot_date,
        r.patient_id,
        p.sex,
        {{ age_in_years('p.date_of_birth', 's.snapshot_date') }} as age_years
    from {{ ref('int_list_size_snapshots') }} as s
    inner join {{ ref('int_registrations') }} as r
        on r.supplier = s.supplier and r.practice_code = s.practice_code
    inner join {{ ref('int_patients') }} as p
        on p.supplier = r.supplier and p.practice_code = r.practice_code and p.patient_id = r.patient_id
    where {{ im1_registered_on('r', 'p', 's.snapshot_date') }}
)

select
    practice_code,
    snapshot_date,
    sex,
    {{ age_band_5y('age_years') }} as age_band,
    cast({{ age_band_order('age_years') }} as integer) as age_band_order,
    count(distinct patient_id) as patients
from registered
group by practice_code, snapshot_date, sex, {{ age_band_5y('age_years') }}, {{ age_band_order('age_years') }}
