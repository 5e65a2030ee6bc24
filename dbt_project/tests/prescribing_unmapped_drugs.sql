{#- Warn: the dm+d products issued (and counted by mart_prescribing) that have no BNF code in the
    dm+d -> BNF mapping (seed dmd_bnf_map). Their items are counted in the 'unmapped' bucket of
    mart_prescribing_bnf; each row here is a product to add to the mapping. -#}
{{ config(severity='warn') }}

select
    i.supplier,
    i.practice_code,
    i.dmd_code,
    min(i.drug_name) as supplier_drug_name,
    count(*) as items
from {{ ref('int_medication_issues') }} as i
left join {{ ref('dmd_bnf_map') }} as m on m.dmd_code = i.dmd_code
where m.dmd_code is null
  and not i.is_privately_prescribed
group by i.supplier, i.practice_code, i.dmd_code
