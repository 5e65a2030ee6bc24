{#- The coded clinical entries the marts need, canonical across suppliers: one row per
    (supplier, practice_code, observation_id) with the SNOMED CT concept, its source term, and the
    value and unit when the entry carries one.

    Kept: observations whose concept is in any code-list seed (macros/observations.sql), so the
    registers, blood pressure, HbA1c, frailty, smoking and opt-out rules all read from here.
    Sensitive-condition concepts (gp_sensitive_exclusion_refsets) are excluded. An EMIS CodeId
    with no Coding_ClinicalCode row yet (EMIS deltas are per table, so a code can arrive a day
    after its first use) is kept with a null concept and resolved on a later run; so is an entry
    whose patient has no person_key yet. SystmOne: the current SRCode entries the practice
    controls (shared-care rows recorded by another organisation are left out); SRCode carries the
    SNOMED concept itself, its episode type as an SRMapping id.

    Incremental (macros/README.md): a run re-derives the entries whose base row was applied since
    its last run, the kept entries still waiting for their code or their patient (retry), the
    SystmOne entries of a practice whose SRMapping changed and those of a patient whose GMS
    registrations elsewhere changed (lookups). A change of the code lists re-reads everything. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='im1_replace',
    unique_key=['supplier', 'practice_code', 'observation_id'],
    on_schema_change='append_new_columns',
    indexes=[{'columns': ['supplier', 'practice_code', 'observation_id'], 'unique': true}, {'columns': ['applied_at']}],
    meta={'im1_incremental': {
        'sources': [
            {'ref': 'base_emis__carerecord_observation', 'key': ["'emis'", 'practice_code', 'observation_guid']},
            {'ref': 'base_tpp__srcode', 'key': ["'tpp'", 'practice_code', 'row_identifier']},
        ],
        'lookups': [
            {'name': 'im1_lookup_tpp_mappings', 'key': ['practice_code'], 'via': 'base_tpp__srcode'},
            {'name': 'im1_lookup_tpp_gms_elsewhere', 'key': ['practice_code', 'id_patient'], 'via': 'base_tpp__srcode'},
        ],
        'retry': 'snomed_concept_id is null or person_key is null',
        'fingerprint': 'im1_observation_concepts_fingerprint',
    }},
    pre_hook="{{ im1_incremental_begin() }}",
    post_hook="{{ im1_incremental_end() }}",
) }}
-- depends_on (read by the incremental hooks): {{ ref('base_tpp__srcode') }}, {{ ref('stg_tpp__gms_organisations') }}

{%- set delta = im1_incremental() %}

with

kept_concepts as (
    {{ im1_observation_concepts() }}
),

-- EMIS: CareRecord_Observation rows applied since the last run (tombstones included) -----------
emis_changed as (
    select
        'emis' as supplier,
        b.practice_code,
        b.patient_guid as patient_id,
        b.observation_guid as observation_id,
        b.effective_date,
        b.entered_date,
        b.code_id,
        b.value,
        b.numeric_unit as unit,
        nullif(b.episode, '') as episode,
        coalesce(b.is_confidential, false) as is_confidential,
        b.applied_at,
        b.is_deleted
    from {{ ref('base_emis__carerecord_observation') }} as b
{%- if delta %}
    where {{ im1_changed_since('b.applied_at', 'base_emis__carerecord_observation') }}
{%- else %}
    where not b.is_deleted
{%- endif %}
),

{%- if delta %}

-- the other touched EMIS entries (retried: still waiting for their code or patient), from this
-- model's own row, which holds every input
emis_retried as (
    select
        t.supplier,
        t.practice_code,
        t.patient_id,
        t.observation_id,
        t.effective_date,
        t.entered_date,
        cast(t.source_code as bigint) as code_id,
        t.value,
        t.unit,
        t.episode,
        t.is_confidential,
        t.applied_at,
        false as is_deleted
    from {{ this }} as t
    inner join {{ im1_touched() }} as k
        on k.supplier = t.supplier and k.practice_code = t.practice_code and k.observation_id = t.observation_id
    where t.supplier = 'emis'
      and not exists (
          select 1 from emis_changed as c
          where c.practice_code = t.practice_code and c.observation_id = t.observation_id
      )
),
{%- endif %}

emis as (
    select
        c.*,
        m.snomed_concept_id,
        m.term,
        m.code_id is not null as is_code_known
    from (
        select * from emis_changed
{%- if delta %}
        union all
        select * from emis_retried
{%- endif %}
    ) as c
    left join {{ ref('int_emis_code_map') }} as m on m.code_id = c.code_id
),

-- SystmOne: the current SRCode rows the practice controls ---------------------------------------
tpp as (
    select
        'tpp' as supplier,
        s.practice_code,
        cast(s.id_patient as text) as patient_id,
        cast(s.row_identifier as text) as observation_id,
        cast(s.date_event as date) as effective_date,
        cast(s.date_event_recorded as date) as entered_date,
        cast(nullif(s.snomed_code, '') as bigint) as snomed_concept_id,
        s.snomed_code as source_code,
        s.snomed_text as term,
        s.numeric_value as value,
        nullif(s.numeric_unit, '') as unit,
        -- EpisodeType: an SRMapping id in SystmOne extracts (resolved here), or the text itself
        coalesce(m.mapping, nullif(s.episode_type, '')) as episode,
        false as is_confidential,
        s.applied_at,
        false as is_deleted,
        true as is_code_known
    from {{ ref('stg_tpp__srcode') }} as s
{%- if delta %}
    inner join {{ im1_touched() }} as k
        on k.supplier = 'tpp' and k.practice_code = s.practice_code
       and s.row_identifier = {{ im1_touched_key('k', 'observation_id', 'bigint', 'tpp') }}
{%- endif %}
    left join {{ ref('stg_tpp__srmapping') }} as m
        on m.practice_code = s.practice_code
       and s.episode_type ~ '^[0-9]+$'
       and m.row_identifier = cast(s.episode_type as bigint)
    where not s.is_shared_care
      and s.id_patient is not null
      and s.snomed_code ~ '^[0-9]+$'
),

-- all suppliers ---------------------------------------------------------------------------------
candidates as (
    select
        supplier, practice_code, patient_id, observation_id, effective_date, entered_date,
        snomed_concept_id, cast(code_id as text) as source_code, term, value, unit, episode, is_confidential,
        applied_at, is_deleted, is_code_known
    from emis
    union all
    select
        supplier, practice_code, patient_id, observation_id, effective_date, entered_date,
        snomed_concept_id, source_code, term, value, unit, episode, is_confidential,
        applied_at, is_deleted, is_code_known
    from tpp
)

-- a touched entry that is deleted or no longer qualifies is not selected: the run removes it
select
    c.supplier,
    c.practice_code,
    c.patient_id,
    k.person_key,
    c.observation_id,
    c.effective_date,
    c.entered_date,
    c.snomed_concept_id,
    c.source_code,
    c.term,
    c.value,
    c.unit,
    c.episode,
    c.is_confidential,
    c.applied_at
from candidates as c
left join {{ ref('int_patient_keys') }} as k
    on k.supplier = c.supplier and k.practice_code = c.practice_code and k.patient_id = c.patient_id
where not c.is_deleted
  and (not c.is_code_known or exists (
      select 1 from kept_concepts as kc where kc.snomed_concept_id = c.snomed_concept_id
  ))
