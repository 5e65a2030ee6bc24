{#- What int_observations keeps: the concepts of every clinical code-list seed (registers, resolved
    codes, blood pressure, HbA1c, frailty, QOF exclusions and invitations, smoking, opt-out; not the
    drug lists), except sensitive-condition concepts (the
    NHS GP data sharing exclusion refsets), which are never kept even if a list names them. -#}
{% macro im1_observation_concepts() -%}
    select distinct c.snomed_concept_id
    from {{ ref('int_codelist_concepts') }} as c
    where not c.is_sensitive_refset
      and not c.is_drug_list
      and not exists (
          select 1 from {{ ref('int_codelist_concepts') }} as s
          where s.is_sensitive_refset and s.snomed_concept_id = c.snomed_concept_id
      )
{%- endmacro %}

{#- Identifies the concept set above: int_observations re-reads its sources when it changes. -#}
{% macro im1_observation_concepts_fingerprint() -%}
    select md5(coalesce(string_agg(cast(snomed_concept_id as text), ',' order by snomed_concept_id), ''))
    from ({{ im1_observation_concepts() }}) as kept
{%- endmacro %}
