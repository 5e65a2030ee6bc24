{#- Drug codes as the suppliers deliver them -> dm+d code and name. EMIS: Coding_DrugCode (CodeId ->
    DmdProductCodeId, Term), shared by every practice of a feed. TPP records the dm+d code and the
    medication name on each row, so it needs no lookup. -#}
select
    'emis' as supplier,
    cast(code_id as text) as source_code,
    cast(dmd_product_code_id as text) as dmd_code,
    term as drug_name
from {{ ref('stg_emis__coding_drugcode') }}
