{#- Prescribing per practice, month of issue and dm+d product, with the product's BNF hierarchy,
    as the English Prescribing Dataset (EPD) counts it - but from the practice's own record
    (issued items, not NHSBSA's dispensed items: marts.md 2.4). The rules and their sources are
    the prescribing casebook (casebook/rx_prescribing.yml, sources.yml):

    - items: one issue is one item (EPD ITEMS: "the number of times a product appears on a
      prescription form", NHSBSA-EPD);
    - quantity: the issued quantities added up (EPD TOTAL_QUANTITY = quantity x items);
    - private prescriptions are not counted (NHSBSA prescription data covers NHS prescriptions and
      excludes private prescriptions, NHSBSA-EXCL). Only EMIS flags them
      (IsPrivatelyPrescribed); SystmOne's SRPrimaryCareMedication has no such column;
    - drug name and BNF codes from the dm+d -> BNF mapping (seed dmd_bnf_map), never from the
      supplier's free text; a product without a BNF code keeps its row with empty BNF columns
      (is_mapped false) and is listed by the warn test prescribing_unmapped_drugs;
    - items per 1,000 registered patients: the list size on the first day of the month of issue
      (mart_list_size, PRGP's "snapshot as at the 1st"; PRGP-SNAPSHOT), empty when the list
      size of that day is not held;
    - issues dated after the practice's reference date are not counted.

    mart_prescribing_bnf rolls this up to each BNF level. Unsuppressed: BI reads
    published.pub_prescribing. -#}
with

issued as (
    select
        i.practice_code,
        i.issue_month,
        i.dmd_code,
        i.quantity
    from {{ ref('int_medication_issues') }} as i
    inner join {{ ref('int_reference_dates') }} as r
        on r.supplier = i.supplier and r.practice_code = i.practice_code
    where i.issue_date <= r.reference_date
      and not i.is_privately_prescribed
),

per_product as (
    select
        practice_code,
        issue_month,
        dmd_code,
        count(*) as items,
        sum(quantity) as quantity
    from issued
    group by practice_code, issue_month, dmd_code
),

list_size as (
    select practice_code, snapshot_date, sum(patients) as list_size
    from {{ ref('mart_list_size') }}
    group by practice_code, snapshot_date
)

select
    p.practice_code,
    p.issue_month,
    p.dmd_code,
    m.dmd_name as drug,
    m.bnf_presentation_code is not null as is_mapped,
    m.bnf_presentation_code,
    m.bnf_presentation_name,
    m.bnf_chemical_code,
    m.bnf_chemical_name,
    m.bnf_paragraph_code,
    m.bnf_paragraph_name,
    m.bnf_section_code,
    m.bnf_section_name,
    m.bnf_chapter_code,
    m.bnf_chapter_name,
    p.items,
    p.quantity,
    cast(l.list_size as bigint) as list_size,
    {{ im1_per_1000('p.items', 'l.list_size') }} as items_per_1000
from per_product as p
left join {{ ref('dmd_bnf_map') }} as m on m.dmd_code = p.dmd_code
left join list_size as l on l.practice_code = p.practice_code and l.snapshot_date = p.issue_month
