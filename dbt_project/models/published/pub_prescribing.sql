{#- marts.mart_prescribing for BI: items per practice, month and drug, and the practice's total
    for the month (dmd_code and drug 'ALL'), summed from the exact counts and then put through
    the NHS small-number rule (macros/sdc.sql); BI never adds the rounded drug rows up. -#}
select
    practice_code,
    issue_month,
    {{ pub_all('dmd_code') }} as dmd_code,
    {{ pub_all('drug') }} as drug,
    {{ sdc_count('sum(items)') }} as items,
    {{ sdc_is_suppressed('sum(items)') }} as is_suppressed
from {{ ref('mart_prescribing') }}
group by practice_code, issue_month, grouping sets ((dmd_code, drug), ())
