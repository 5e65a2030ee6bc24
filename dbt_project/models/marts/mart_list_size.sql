{#- Registered patients by practice, sex and 5-year age band on the snapshot date (PRGP style).

    Counted: a Regular registration with start <= D and (no end or end > D), alive on D
    (no death or death > D), not a dummy/test patient. Age is completed years on D.
    D is the first day of the month of the latest loaded EMIS extract. -#}
with

snapshot as (
    select cast(date_trunc('month', max(extract_ts)) as date) as snapshot_date
    from {{ source('ingest', 'batches') }}
    where status = 'loaded'
),

eligible as (
    select
        p.practice_code,
        s.snapshot_date,
        p.sex,
        {{ age_in_years('p.date_of_birth', 's.snapshot_date') }} as age_years
    from {{ ref('stg_emis__patients') }} as p
    cross join snapshot as s
    where p.patient_type = 'Regular'
      and not p.is_dummy
      and p.registration_start_date <= s.snapshot_date
      and (p.registration_end_date is null or p.registration_end_date > s.snapshot_date)
      and (p.date_of_death is null or p.date_of_death > s.snapshot_date)
      and p.date_of_birth <= s.snapshot_date
),

banded as (
    select
        practice_code,
        snapshot_date,
        sex,
        {{ age_band_5y('age_years') }} as age_band,
        least(age_years / 5, 19) as age_band_order
    from eligible
)

select
    practice_code,
    snapshot_date,
    sex,
    age_band,
    age_band_order,
    count(*) as patients
from banded
group by practice_code, snapshot_date, sex, age_band, age_band_order
