{#- marts.mart_qof_indicators for BI: every count through the NHS small-number rule (macros/sdc.sql),
    achievement and PCA rates recomputed from the published counts (withheld when a count they use
    is). -#}
select
    practice_code,
    reference_date,
    reference_kind,
    qof_year,
    indicator,
    {{ sdc_count('eligible') }} as eligible,
    {{ sdc_count('numerator') }} as numerator,
    {{ sdc_count('denominator') }} as denominator,
    {{ sdc_count('pca_count') }} as pca_count,
    {{ sdc_rate('numerator', 'denominator', digits=2) }} as achievement_pct,
    {{ sdc_rate('pca_count', '(denominator + pca_count)', digits=2) }} as pca_rate_pct,
    {{ sdc_is_suppressed('eligible') }} or {{ sdc_is_suppressed('numerator') }}
        or {{ sdc_is_suppressed('denominator') }} or {{ sdc_is_suppressed('pca_count') }} as is_suppressed
from {{ ref('mart_qof_indicators') }}
