{#- marts.mart_qof_registers for BI: every count through the NHS small-number rule (macros/sdc.sql),
    prevalence recomputed from the published counts (withheld when either is). -#}
select
    practice_code,
    reference_date,
    reference_kind,
    qof_year,
    register,
    {{ sdc_count('register_count') }} as register_count,
    {{ sdc_count('list_size_all_ages') }} as list_size_all_ages,
    {{ sdc_count('list_size_age_group') }} as list_size_age_group,
    {{ sdc_rate('register_count', 'list_size_age_group', digits=2) }} as prevalence_pct,
    {{ sdc_is_suppressed('register_count') }} or {{ sdc_is_suppressed('list_size_all_ages') }}
        or {{ sdc_is_suppressed('list_size_age_group') }} as is_suppressed
from {{ ref('mart_qof_registers') }}
