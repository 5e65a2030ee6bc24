{#- Prescribing: items issued per practice, month of issue and drug (dm+d code and name), from the
    practice's own record (issued items, not NHSBSA dispensed items - marts.md 2.4). Issues dated
    after the practice's reference date are not counted. Unsuppressed: BI reads
    published.pub_prescribing. -#}
with

issued as (
    select
        i.practice_code,
        i.issue_month,
        i.dmd_code,
        i.drug_name
    from {{ ref('int_medication_issues') }} as i
    inner join {{ ref('int_reference_dates') }} as r
        on r.supplier = i.supplier and r.practice_code = i.practice_code
    where i.issue_date <= r.reference_date
)

select
    practice_code,
    issue_month,
    dmd_code,
    drug_name as drug,
    count(*) as items
from issued
group by practice_code, issue_month, dmd_code, drug_name
