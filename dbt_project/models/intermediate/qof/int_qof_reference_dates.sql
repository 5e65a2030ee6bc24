{#- The dates QOF is measured on, per practice (ACHV_DAT, BR46-DM 3.1 "the date up to which
    pertinent patient information is considered"):

    - achievement: 31 March, the end of each QOF year (PPED), for the latest
      var('qof_achievement_years') QOF years that ended on or before the practice's data date;
    - month_end: the last day of each month of the current QOF year up to the data date (in-year
      progress, as the monthly QOF extracts measure it).

    Each row carries its QOF year's qualifying dates (BR46-DM 3.1): QSSD (1 April, the quality
    service start date) and PPED (31 March, the payment period end date). The rules' windows are
    always counted back from PPED ("in the 12 months leading up to and including PPED"), also on a
    month-end; data are considered up to the reference date. -#}
with

data_dates as (
    select
        supplier,
        practice_code,
        reference_date as data_date,
        -- the year of the latest 31 March on or before the data date
        case when reference_date >= make_date(cast(extract(year from reference_date) as integer), 3, 31)
             then cast(extract(year from reference_date) as integer)
             else cast(extract(year from reference_date) as integer) - 1 end as latest_pped_year
    from {{ ref('int_reference_dates') }}
),

achievement as (
    select
        d.supplier,
        d.practice_code,
        make_date(d.latest_pped_year - k.years_back, 3, 31) as reference_date,
        'achievement' as reference_kind
    from data_dates as d
    cross join generate_series(0, {{ var('qof_achievement_years', 3) }} - 1) as k (years_back)
),

month_ends as (
    -- the current QOF year started on 1 April after the latest PPED
    select
        d.supplier,
        d.practice_code,
        cast(make_date(d.latest_pped_year, 4, 1) + make_interval(months => k.months) - interval '1 day' as date)
            as reference_date,
        'month_end' as reference_kind
    from data_dates as d
    cross join generate_series(1, 11) as k (months)
    where cast(make_date(d.latest_pped_year, 4, 1) + make_interval(months => k.months) - interval '1 day' as date)
          <= d.data_date
),

dates as (
    select * from achievement
    union all
    select * from month_ends
)

select
    supplier,
    practice_code,
    reference_date,
    reference_kind,
    pped,
    cast(pped - interval '1 year' + interval '1 day' as date) as qssd,
    cast(extract(year from pped) - 1 as text) || '-' || right(cast(extract(year from pped) as text), 2) as qof_year
from (
    select
        *,
        case when extract(month from reference_date) <= 3
             then make_date(cast(extract(year from reference_date) as integer), 3, 31)
             else make_date(cast(extract(year from reference_date) as integer) + 1, 3, 31) end as pped
    from dates
) as d
