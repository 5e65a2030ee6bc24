{#- Registered patients by practice, sex and 5-year age band (PRGP style) on the first of the
    month of the practice's reference date and of each of the 12 months before it (13 snapshots),
    as known on the reference date (the latest loaded extract).

    Counted on snapshot date S: macros/list_size.sql (registered on S, age in completed years on
    S, one patient once). Only non-empty groups have a row. Single year of age:
    mart_list_size_single_age; PRGP's published shape (MALE/FEMALE/ALL, ALL ages, PCN, sub-ICB
    and ICB roll-ups): published.pub_list_size. -#}
with

registered as (
    {{ list_size_registered() }}
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
