{#- The patients on a practice's list on each of its snapshot dates (PRGP; marts.md 4.4), one row
    per practice, snapshot date and patient, for mart_list_size (5-year bands) and
    mart_list_size_single_age (single year of age): registered on S (macros/registration.sql:
    Regular, start <= S, no end or end > S, alive on S, not a dummy patient), age in completed
    years on S. A patient is counted once per snapshot even if two registration periods overlap.

    Past snapshots, one rule for both suppliers: a patient counts on S when any Regular
    registration period AT THE PRACTICE that the latest extract holds covers S (int_registrations;
    the README's "List size" says what each supplier's history can and cannot give). -#}
{% macro list_size_registered() -%}
    select distinct
        s.practice_code,
        s.snapshot_date,
        r.patient_id,
        p.sex,
        {{ age_in_years('p.date_of_birth', 's.snapshot_date') }} as age_years
    from {{ ref('int_list_size_snapshots') }} as s
    inner join {{ ref('int_registrations') }} as r
        on r.supplier = s.supplier and r.practice_code = s.practice_code
    inner join {{ ref('int_patients') }} as p
        on p.supplier = r.supplier and p.practice_code = r.practice_code and p.patient_id = r.patient_id
    where {{ im1_registered_on('r', 'p', 's.snapshot_date') }}
{%- endmacro %}

{#- PRGP single year of age: '0' ... '94', and '95+' for 95 and over (PRGP metadata, AGE). -#}
{% macro age_single_prgp(age) -%}
    case when {{ age }} >= 95 then '95+' else cast({{ age }} as text) end
{%- endmacro %}

{#- PRGP's published shape of a list-size mart (published.pub_list_size, pub_list_size_single_age):
    org_type GP / PCN / SUB_ICB / ICB (the practice dimension valid on the snapshot date; a
    practice not in it rolls up under 'UNMAPPED'), sex MALE / FEMALE / ALL and every age plus
    'ALL'. PRGP's SEX is "ALL (Male+Female)" (PRGP metadata): indeterminate and unknown sex are in
    no published row. Every count, totals and roll-ups included, is summed from the exact mart
    counts and only then put through the NHS small-number rule (macros/sdc.sql); practices is how
    many practices a row sums (not people, so not suppressed). -#}
{% macro pub_list_size_rollup(mart, age, age_order, all_order) -%}
with

gp as (
    select
        m.snapshot_date,
        m.practice_code,
        d.practice_code is not null as is_mapped,
        coalesce(d.practice_name, m.practice_code) as practice_name,
        coalesce(d.pcn_code, 'UNMAPPED') as pcn_code,
        coalesce(d.pcn_name, 'Practices not in the practice dimension') as pcn_name,
        coalesce(d.sub_icb_code, 'UNMAPPED') as sub_icb_code,
        coalesce(d.sub_icb_name, 'Practices not in the practice dimension') as sub_icb_name,
        coalesce(d.icb_code, 'UNMAPPED') as icb_code,
        coalesce(d.icb_name, 'Practices not in the practice dimension') as icb_name,
        upper(m.sex) as sex,
        m.{{ age }} as age,
        m.{{ age_order }} as age_order,
        m.patients
    from {{ ref(mart) }} as m
    left join {{ ref('practice_dimension') }} as d
        on d.practice_code = m.practice_code
       and d.valid_from <= m.snapshot_date
       and (d.valid_to is null or d.valid_to > m.snapshot_date)
    where m.sex in ('male', 'female')
),

levels as (
    select 'GP' as org_type, practice_code as org_code, practice_name as org_name, practice_code, snapshot_date, sex, age, age_order, patients from gp
    union all
    select 'PCN', pcn_code, pcn_name, practice_code, snapshot_date, sex, age, age_order, patients from gp
    union all
    select 'SUB_ICB', sub_icb_code, sub_icb_name, practice_code, snapshot_date, sex, age, age_order, patients from gp
    union all
    select 'ICB', icb_code, icb_name, practice_code, snapshot_date, sex, age, age_order, patients from gp
)

select
    org_type,
    org_code,
    org_name,
    snapshot_date,
    {{ pub_all('sex') }} as sex,
    {{ pub_all('age') }} as {{ age }},
    cast(case when grouping(age) = 1 then {{ all_order }} else age_order end as integer) as {{ age_order }},
    {{ sdc_count('sum(patients)') }} as patients,
    {{ sdc_is_suppressed('sum(patients)') }} as is_suppressed,
    count(distinct practice_code) as practices
from levels
group by org_type, org_code, org_name, snapshot_date, cube (sex, (age, age_order))
{%- endmacro %}
