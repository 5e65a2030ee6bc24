{#- marts.mart_prescribing_bnf for BI: items per practice, month and BNF level and code, as
    OpenPrescribing reports a BNF code, through the NHS small-number rule (macros/sdc.sql; NHS
    Digital disclosure control 2018, casebook/sources.yml NHSD-SDC-2018). Each level holds every
    item of the month (products without a BNF code are the 'unmapped' row), so a level's rows are
    a breakdown of the month's total, which is pub_prescribing's 'ALL' row; the rows are never to
    be added up. Items per 1,000 registered patients is computed from the published (rounded)
    items and list size, and withheld when either is suppressed (sdc_rate, scale 1,000). -#}
select
    practice_code,
    issue_month,
    bnf_level,
    bnf_level_order,
    bnf_code,
    bnf_name,
    {{ sdc_count('items') }} as items,
    {{ sdc_is_suppressed('items') }} as is_suppressed,
    {{ sdc_count('list_size') }} as list_size,
    {{ sdc_rate('items', 'list_size', scale=1000, digits=2) }} as items_per_1000
from {{ ref('mart_prescribing_bnf') }}
