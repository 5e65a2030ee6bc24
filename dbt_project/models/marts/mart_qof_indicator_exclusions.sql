{#- The patients each QOF indicator's rejection rules removed, per practice, reference date,
    indicator and rule (qof_exclusion_reasons: e.g. HYP008 rule 4 'unsuitable', DM020 rule 9
    'recent_diagnosis'). Answers "why is this practice's denominator smaller than its register?";
    int_qof_indicator_patients answers it per patient. Every rule of the indicator's chain has a
    row, zeros included; the counts add up to mart_qof_indicators.pca_count. -#}
with

rules as (
    select i.indicator, x.ruleset, x.rule, x.reason, x.description
    from {{ ref('qof_indicator_rules') }} as i
    inner join {{ ref('qof_exclusion_reasons') }} as x on x.ruleset = i.ruleset
),

counted as (
    select supplier, practice_code, reference_date, indicator, reason, count(*) as patients
    from {{ ref('int_qof_indicator_patients') }}
    where status = 'excluded'
    group by supplier, practice_code, reference_date, indicator, reason
)

select
    d.practice_code,
    d.reference_date,
    d.reference_kind,
    d.qof_year,
    r.indicator,
    r.rule,
    r.reason,
    r.description,
    coalesce(c.patients, 0) as patients
from {{ ref('int_qof_reference_dates') }} as d
cross join rules as r
left join counted as c
    on c.supplier = d.supplier and c.practice_code = d.practice_code and c.reference_date = d.reference_date
   and c.indicator = r.indicator and c.reason = r.reason
