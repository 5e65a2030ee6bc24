{#- Every dated entry of a QOF cluster, per patient: coded entries (int_observations) and issued
    drugs (int_medication_issues, for drug clusters such as ASTTRT_COD), one row per entry and
    cluster (a concept in two clusters gives two rows, e.g. a home systolic reading is BP_SYS,
    BP_COD and HOMEAMBBP). The QOF rules read their dates, values and episode types from here:

    - cluster: the PCD cluster of the code list the concept is in (seeds/codelists meta);
    - event_date: the clinical date (observation effective date, issue date);
    - value: the numeric value (mmHg, mmol/mol), as recorded;
    - episode: the episode type as recorded (first, new, review, ...; depression register). -#}
{{ config(indexes=[{'columns': ['supplier', 'practice_code', 'patient_id']}]) }}
with

clusters as (
    select distinct cluster, snomed_concept_id, is_drug_list
    from {{ ref('int_codelist_concepts') }}
    where not is_sensitive_refset
      and cluster not in ('OPT_OUT', 'SENSITIVE', 'LSMOK_COD', 'EXSMOK_COD')
)

select
    o.supplier,
    o.practice_code,
    o.patient_id,
    o.observation_id as event_id,
    'observation' as event_source,
    c.cluster,
    o.snomed_concept_id as code,
    o.effective_date as event_date,
    o.value,
    o.episode
from {{ ref('int_observations') }} as o
inner join clusters as c on c.snomed_concept_id = o.snomed_concept_id and not c.is_drug_list
where o.effective_date is not null

union all

select
    i.supplier,
    i.practice_code,
    i.patient_id,
    i.issue_id as event_id,
    'medication_issue' as event_source,
    c.cluster,
    cast(i.dmd_code as bigint) as code,
    i.issue_date as event_date,
    cast(null as numeric) as value,
    cast(null as text) as episode
from {{ ref('int_medication_issues') }} as i
inner join clusters as c
    on c.is_drug_list
   and i.dmd_code ~ '^[0-9]{6,18}$'
   and c.snomed_concept_id = cast(i.dmd_code as bigint)
where i.issue_date is not null
