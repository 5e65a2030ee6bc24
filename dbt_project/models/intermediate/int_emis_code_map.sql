{#- EMIS CodeId -> SNOMED CT concept, one row per CodeId.

    Coding_ClinicalCode is not unique on CodeId: a code placed under two parents comes once per
    parent (EMIS pitfall 9), and a multi-organisation feed and each single-practice feed deliver
    their own copy. Observations join here on CodeId, so exactly one row per CodeId is kept (the
    row without a parent first, then the newest), and an observation is never multiplied. -#}
select distinct on (code_id)
    code_id,
    snomed_ct_concept_id as snomed_concept_id,
    term,
    emis_code_category_description as code_category,
    extract_ts
from {{ ref('stg_emis__coding_clinicalcode') }}
where code_id is not null
order by code_id, (parent_code_id is not null), extract_ts desc, processing_id desc nulls last
