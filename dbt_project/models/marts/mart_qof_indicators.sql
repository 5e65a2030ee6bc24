{#- QOF indicators per practice on each QOF reference date (the achievement date 31 March and the
    month-ends of the current QOF year; see int_qof_reference_dates), counted from
    int_qof_indicator_patients (which says, per patient, why):

    - eligible: register patients in the indicator's group (age for HYP008/HYP009, frailty for
      DM020/DM021);
    - numerator: those meeting the target; denominator: numerator plus those who miss it and pass
      every rejection rule;
    - pca_count: personalised care adjustments and exclusions, i.e. eligible patients removed by a
      rejection rule (care unsuitable or declined, maximal therapy, invitations, newly diagnosed
      or registered, ...; the count per rule is in mart_qof_indicator_exclusions);
    - achievement_pct = numerator / denominator x 100; pca_rate_pct = pca_count / (denominator +
      pca_count) x 100 (both 2 decimals, null when undefined).

    Every practice has a row per indicator and reference date, zeros included. -#}
with

rules as (
    select indicator from {{ ref('qof_indicator_rules') }}
),

counted as (
    select
        supplier,
        practice_code,
        reference_date,
        indicator,
        count(*) as eligible,
        count(*) filter (where in_numerator) as numerator,
        count(*) filter (where in_denominator) as denominator,
        count(*) filter (where status = 'excluded') as pca_count
    from {{ ref('int_qof_indicator_patients') }}
    group by supplier, practice_code, reference_date, indicator
),

counts as (
    select
        d.practice_code,
        d.reference_date,
        d.reference_kind,
        d.qof_year,
        i.indicator,
        coalesce(c.eligible, 0) as eligible,
        coalesce(c.numerator, 0) as numerator,
        coalesce(c.denominator, 0) as denominator,
        coalesce(c.pca_count, 0) as pca_count
    from {{ ref('int_qof_reference_dates') }} as d
    cross join rules as i
    left join counted as c
        on c.supplier = d.supplier and c.practice_code = d.practice_code and c.reference_date = d.reference_date
       and c.indicator = i.indicator
)

select
    practice_code,
    reference_date,
    reference_kind,
    qof_year,
    indicator,
    eligible,
    numerator,
    denominator,
    pca_count,
    round(100.0 * numerator / nullif(denominator, 0), 2) as achievement_pct,
    round(100.0 * pca_count / nullif(denominator + pca_count, 0), 2) as pca_rate_pct
from counts
