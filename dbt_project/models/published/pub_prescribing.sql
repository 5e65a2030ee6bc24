{#- marts.mart_prescribing for BI: every count through the NHS small-number rule (macros/sdc.sql). -#}
select
    practice_code,
    issue_month,
    dmd_code,
    drug,
    {{ sdc_count('items') }} as items,
    {{ sdc_is_suppressed('items') }} as is_suppressed
from {{ ref('mart_prescribing') }}
