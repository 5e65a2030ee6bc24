{#- marts.mart_list_size for BI: every count through the NHS small-number rule (macros/sdc.sql). -#}
select
    practice_code,
    snapshot_date,
    sex,
    age_band,
    age_band_order,
    {{ sdc_count('patients') }} as patients,
    {{ sdc_is_suppressed('patients') }} as is_suppressed
from {{ ref('mart_list_size') }}
