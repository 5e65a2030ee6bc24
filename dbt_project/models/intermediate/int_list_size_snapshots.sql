{#- The dates each practice's list size is counted on: the first of the month of its reference
    date and of each of the 12 months before it (13 snapshots, as the ground truth's
    snapshot_dates). -#}
select
    d.supplier,
    d.practice_code,
    d.reference_date,
    cast(date_trunc('month', d.reference_date) - make_interval(months => k.months_back) as date) as snapshot_date
from {{ ref('int_reference_dates') }} as d
cross join generate_series(0, 12) as k (months_back)
