{#- Prescribing per practice, month of issue and BNF level (chapter, section, paragraph, chemical
    substance, presentation): mart_prescribing rolled up along the BNF hierarchy of the dm+d ->
    BNF mapping, as OpenPrescribing reports a BNF code. Products without a BNF code are counted at
    every level in one explicit bucket, bnf_code 'unmapped', so each level adds up to all items.
    Quantity is given at presentation level only: EPD publishes TOTAL_QUANTITY per presentation,
    and the quantities of different presentations are in different units. Items per 1,000
    registered patients as in mart_prescribing (list size on the first of the month). -#}
with

products as (
    select * from {{ ref('mart_prescribing') }}
),

levels as (
    {%- set levels = ['chapter', 'section', 'paragraph', 'chemical', 'presentation'] %}
    {%- for level in levels %}
    select
        practice_code,
        issue_month,
        '{{ level }}' as bnf_level,
        {{ loop.index }} as bnf_level_order,
        coalesce(bnf_{{ level }}_code, 'unmapped') as bnf_code,
        coalesce(bnf_{{ level }}_name, 'Unmapped: no BNF code for the dm+d product') as bnf_name,
        items,
        {{ 'quantity' if level == 'presentation' else 'cast(null as numeric)' }} as quantity,
        list_size
    from products
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
)

select
    practice_code,
    issue_month,
    bnf_level,
    bnf_level_order,
    bnf_code,
    min(bnf_name) as bnf_name,
    cast(sum(items) as bigint) as items,
    case when bnf_code <> 'unmapped' then sum(quantity) end as quantity,
    max(list_size) as list_size,
    {{ im1_per_1000('sum(items)', 'max(list_size)') }} as items_per_1000
from levels
group by practice_code, issue_month, bnf_level, bnf_level_order, bnf_code
