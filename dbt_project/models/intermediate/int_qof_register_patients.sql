{#- Person x register on the practice's reference date, for every patient of the QOF list with a
    diagnosis of the register's condition on or before that date (qof_register_rules).

    On the register when: old enough (min_age), the latest diagnosis is on or after the rule's
    earliest date (DEP003: 1 April 2006), and no resolved code is dated on or after the latest
    diagnosis (a resolution on the same day counts as resolved; a later diagnosis brings the
    patient back). A diagnosis is any concept of the register's code list, so a concept in two
    lists (e.g. AST_COD and COPD_COD) counts for both. -#}
with

population as (
    select * from {{ ref('int_qof_population') }}
),

rules as (
    select * from {{ ref('qof_register_rules') }}
),

diagnoses as (
    select
        o.supplier,
        o.practice_code,
        o.patient_id,
        r.register,
        min(o.effective_date) as first_diagnosis_date,
        max(o.effective_date) as latest_diagnosis_date
    from {{ ref('int_observations') }} as o
    inner join population as p
        on p.supplier = o.supplier and p.practice_code = o.practice_code and p.patient_id = o.patient_id
    inner join {{ ref('int_codelist_concepts') }} as c on c.snomed_concept_id = o.snomed_concept_id
    inner join rules as r on r.diagnosis_codelist = c.codelist
    where o.effective_date <= p.reference_date
    group by o.supplier, o.practice_code, o.patient_id, r.register
),

resolutions as (
    select
        o.supplier,
        o.practice_code,
        o.patient_id,
        r.register,
        max(o.effective_date) as latest_resolved_date
    from {{ ref('int_observations') }} as o
    inner join population as p
        on p.supplier = o.supplier and p.practice_code = o.practice_code and p.patient_id = o.patient_id
    inner join rules as r on cast(r.resolved_code as bigint) = o.snomed_concept_id
    where o.effective_date <= p.reference_date
    group by o.supplier, o.practice_code, o.patient_id, r.register
)

select
    p.supplier,
    p.practice_code,
    p.patient_id,
    p.person_key,
    p.reference_date,
    d.register,
    p.age_years,
    d.first_diagnosis_date,
    d.latest_diagnosis_date,
    s.latest_resolved_date,
    p.age_years >= r.min_age
        and (r.diagnosed_on_or_after is null or d.latest_diagnosis_date >= r.diagnosed_on_or_after)
        and (s.latest_resolved_date is null or s.latest_resolved_date < d.latest_diagnosis_date)
        as is_on_register
from diagnoses as d
inner join population as p
    on p.supplier = d.supplier and p.practice_code = d.practice_code and p.patient_id = d.patient_id
inner join rules as r on r.register = d.register
left join resolutions as s
    on s.supplier = d.supplier and s.practice_code = d.practice_code and s.patient_id = d.patient_id
   and s.register = d.register
