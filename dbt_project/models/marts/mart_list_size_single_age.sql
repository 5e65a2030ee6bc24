{#- Registered patients by practice, sex and single year of age as PRGP publishes it (0 ... 94,
    then 95+) on the same 13 snapshot dates as mart_list_size, counted the same way
    (macros/list_size.sql). Only non-empty groups have a row; the 5-year bands of mart_list_size
    are sums of these rows. -#}
with

registered as (
    {{ list_size_registered() }}
)

select
    practice_code,
    snapshot_date,
    sex,
    {{ age_single_prgp('age_years') }} as age,
    cast(least(age_years, 95) as integer) as age_order,
    count(distinct patient_id) as patients
from registered
group by practice_code, snapshot_date, sex, {{ age_single_prgp('age_years') }}, least(age_years, 95)
