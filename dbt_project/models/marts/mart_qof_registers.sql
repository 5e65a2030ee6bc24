{#- QOF disease registers and prevalence per practice on each QOF reference date: the achievement
    date (31 March) of the latest QOF years and each month-end of the current QOF year
    (int_qof_reference_dates; reference_kind says which).

    register_count: patients on the register (int_qof_register_patients). list_size_all_ages: the
    practice's QOF population on the reference date (registered for GMS, int_qof_population);
    list_size_age_group: those of them at or above the register's minimum age (e.g. 17+ for
    DM017, the whole list for registers without one). prevalence_pct = register_count /
    list_size_age_group x 100, rounded to 2 decimals (null for an empty list). Every practice has
    a row per register and reference date, zeros included. -#}
with

rules as (
    select register, min_age from {{ ref('qof_register_rules') }}
),

lists as (
    select
        p.supplier,
        p.practice_code,
        p.reference_date,
        r.register,
        count(*) as list_size_all_ages,
        count(*) filter (where p.age_years >= r.min_age) as list_size_age_group
    from {{ ref('int_qof_population') }} as p
    cross join rules as r
    group by p.supplier, p.practice_code, p.reference_date, r.register
),

registers as (
    select supplier, practice_code, reference_date, register, count(*) as register_count
    from {{ ref('int_qof_register_patients') }}
    where is_on_register
    group by supplier, practice_code, reference_date, register
),

counts as (
    select
        d.practice_code,
        d.reference_date,
        d.reference_kind,
        d.qof_year,
        r.register,
        coalesce(g.register_count, 0) as register_count,
        coalesce(l.list_size_all_ages, 0) as list_size_all_ages,
        coalesce(l.list_size_age_group, 0) as list_size_age_group
    from {{ ref('int_qof_reference_dates') }} as d
    cross join rules as r
    left join lists as l
        on l.supplier = d.supplier and l.practice_code = d.practice_code and l.reference_date = d.reference_date
       and l.register = r.register
    left join registers as g
        on g.supplier = d.supplier and g.practice_code = d.practice_code and g.reference_date = d.reference_date
       and g.register = r.register
)

select
    practice_code,
    reference_date,
    reference_kind,
    qof_year,
    register,
    register_count,
    list_size_all_ages,
    list_size_age_group,
    round(100.0 * register_count / nullif(list_size_age_group, 0), 2) as prevalence_pct
from counts
