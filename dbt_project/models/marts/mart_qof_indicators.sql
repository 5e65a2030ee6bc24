{#- QOF-style control indicators per practice on its reference date (qof_indicator_rules):
    HYP008/HYP009 (blood pressure of hypertensive patients aged <= 79 / >= 80) and DM020/DM021
    (IFCC-HbA1c of diabetic patients without / with moderate or severe frailty).

    Reading: the latest day in the 12 months up to the reference date ((R - 12 months, R]) with a
    reading, and on that day the lowest value (for blood pressure the lowest systolic and the
    lowest diastolic of a day with both). Plausible values only: systolic 40-300, diastolic
    20-200 mmHg, HbA1c 20-200 mmol/mol. Frailty: the latest frailty code on or before R (on the
    same day the more severe wins). Target met: values at or below the rule's limits.

    Denominator: register patients in the indicator's group; for DM020/DM021 a patient diagnosed
    (latest diagnosis) or registered in the last 9 months who misses the target is rejected (the
    target is checked first). Numerator: those who meet the target. QOF-style, not QOF
    achievement: no personalised care adjustments or invitation rules. -#}
with

rules as (
    select * from {{ ref('qof_indicator_rules') }}
),

members as (
    select
        m.supplier,
        m.practice_code,
        m.patient_id,
        m.reference_date,
        m.register,
        m.age_years,
        m.latest_diagnosis_date,
        p.registration_date
    from {{ ref('int_qof_register_patients') }} as m
    inner join {{ ref('int_qof_population') }} as p
        on p.supplier = m.supplier and p.practice_code = m.practice_code and p.patient_id = m.patient_id
    where m.is_on_register
      and m.register in (select register from rules)
),

member_patients as (
    select distinct supplier, practice_code, patient_id, reference_date from members
),

observations as (
    select
        o.supplier,
        o.practice_code,
        o.patient_id,
        o.snomed_concept_id,
        o.effective_date,
        o.value,
        c.codelist,
        m.reference_date
    from {{ ref('int_observations') }} as o
    inner join member_patients as m
        on m.supplier = o.supplier and m.practice_code = o.practice_code and m.patient_id = o.patient_id
    inner join {{ ref('int_codelist_concepts') }} as c on c.snomed_concept_id = o.snomed_concept_id
    where c.codelist in ('bp_systolic_qof', 'bp_diastolic_qof', 'ifcchbam_cod', 'frailty_cod')
      and o.effective_date <= m.reference_date
),

latest_frailty as (
    select distinct on (o.supplier, o.practice_code, o.patient_id)
        o.supplier,
        o.practice_code,
        o.patient_id,
        f.is_moderate_or_severe
    from observations as o
    inner join {{ ref('frailty_severity') }} as f on cast(f.code as bigint) = o.snomed_concept_id
    where o.codelist = 'frailty_cod'
    order by o.supplier, o.practice_code, o.patient_id, o.effective_date desc, f.is_moderate_or_severe desc
),

readings_by_day as (
    select
        supplier,
        practice_code,
        patient_id,
        effective_date,
        min(value) filter (where codelist = 'bp_systolic_qof' and value between 40 and 300) as systolic,
        min(value) filter (where codelist = 'bp_diastolic_qof' and value between 20 and 200) as diastolic,
        min(value) filter (where codelist = 'ifcchbam_cod' and value between 20 and 200) as hba1c
    from observations
    where codelist <> 'frailty_cod'
      and value is not null
      and effective_date > {{ im1_months_before('reference_date', 12) }}
    group by supplier, practice_code, patient_id, effective_date
),

latest_bp as (
    select distinct on (supplier, practice_code, patient_id)
        supplier, practice_code, patient_id, systolic, diastolic
    from readings_by_day
    where systolic is not null and diastolic is not null
    order by supplier, practice_code, patient_id, effective_date desc
),

latest_hba1c as (
    select distinct on (supplier, practice_code, patient_id)
        supplier, practice_code, patient_id, hba1c
    from readings_by_day
    where hba1c is not null
    order by supplier, practice_code, patient_id, effective_date desc
),

assigned as (
    select
        m.*,
        i.indicator,
        i.reject_recent_months,
        case i.measure
            when 'blood_pressure' then coalesce(b.systolic <= i.max_value and b.diastolic <= i.max_diastolic, false)
            when 'hba1c' then coalesce(h.hba1c <= i.max_value, false)
        end as meets_target
    from members as m
    inner join rules as i
        on i.register = m.register
       and m.age_years >= i.min_age
       and (i.max_age is null or m.age_years <= i.max_age)
    left join latest_frailty as f
        on f.supplier = m.supplier and f.practice_code = m.practice_code and f.patient_id = m.patient_id
    left join latest_bp as b
        on b.supplier = m.supplier and b.practice_code = m.practice_code and b.patient_id = m.patient_id
    left join latest_hba1c as h
        on h.supplier = m.supplier and h.practice_code = m.practice_code and h.patient_id = m.patient_id
    where i.frailty = 'any'
       or (i.frailty = 'moderate_or_severe') = coalesce(f.is_moderate_or_severe, false)
),

counted as (
    select
        supplier,
        practice_code,
        indicator,
        count(*) filter (where meets_target) as numerator,
        count(*) as denominator
    from assigned
    -- the target is checked before the rejection of recently diagnosed or registered patients
    where meets_target
       or reject_recent_months is null
       or not (latest_diagnosis_date > {{ im1_months_before('reference_date', 'reject_recent_months') }}
               or registration_date > {{ im1_months_before('reference_date', 'reject_recent_months') }})
    group by supplier, practice_code, indicator
)

select
    d.practice_code,
    d.reference_date,
    i.indicator,
    coalesce(c.numerator, 0) as numerator,
    coalesce(c.denominator, 0) as denominator,
    round(100.0 * coalesce(c.numerator, 0) / nullif(c.denominator, 0), 2) as achievement_pct
from {{ ref('int_reference_dates') }} as d
cross join rules as i
left join counted as c
    on c.supplier = d.supplier and c.practice_code = d.practice_code and c.indicator = i.indicator
