{#- The coded clinical entries the marts need, canonical across suppliers: one row per
    (supplier, practice_code, observation_id) with the SNOMED CT concept, its source term, and the
    value and unit when the entry carries one.

    Kept: observations whose concept is in any code-list seed (macros/observations.sql), so the
    registers, blood pressure, HbA1c, frailty, smoking and opt-out rules all read from here.
    Sensitive-condition concepts (gp_sensitive_exclusion_refsets) are excluded. An EMIS CodeId
    with no Coding_ClinicalCode row yet (EMIS deltas are per table, so a code can arrive a day
    after its first use) is kept with a null concept and resolved on a later run; so is an entry
    whose patient has no person_key yet.

    Incremental: each run reads only the base rows applied since its last run (applied_at in
    (watermark, run start], index on applied_at; macros/watermarks.sql) plus its own unresolved
    rows, and replaces those keys (delete+insert); a deleted record (tombstone) or an entry that
    no longer qualifies removes its key (post-hook). The first run, a --full-refresh, or a change
    of the code lists reads everything. SystmOne staging is not incremental yet: every run
    replaces all TPP rows (pre-hook) with the current SRCode entries the practice controls
    (shared-care rows recorded by another organisation are left out); SRCode carries the SNOMED
    concept itself. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['supplier', 'practice_code', 'observation_id'],
    on_schema_change='append_new_columns',
    indexes=[{'columns': ['supplier', 'practice_code', 'observation_id'], 'unique': true}, {'columns': ['applied_at']}],
    pre_hook=[
        "{{ im1_reset_if_fingerprint_changed('base_emis__carerecord_observation', 'emis', im1_observation_concepts_fingerprint()) }}",
        "{{ im1_delete_supplier_rows('tpp') }}",
    ],
    post_hook=[
        "delete from {{ this }} where is_deleted",
        "{{ im1_save_watermark('base_emis__carerecord_observation', im1_observation_concepts_fingerprint()) }}",
    ],
) }}

{%- set emis_since = im1_watermark('base_emis__carerecord_observation', im1_observation_concepts_fingerprint()) %}

with

kept_concepts as (
    {{ im1_observation_concepts() }}
),

-- EMIS: CareRecord_Observation rows changed since the last run (tombstones included) ------------
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
{%- if emis_since is none %}
    where not b.is_deleted
{%- else %}
    where b.applied_at > cast('{{ emis_since }}' as timestamptz)
      and b.applied_at <= cast('{{ run_started_at }}' as timestamptz)
{%- endif %}
),

{%- if emis_since is not none %}

-- kept rows still waiting for their code (or their patient's key)
emis_unresolved as (
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
    where t.supplier = 'emis'
      and (t.snomed_concept_id is null or t.person_key is null)
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
{%- if emis_since is not none %}
        union all
        select * from emis_unresolved
{%- endif %}
    ) as c
    left join {{ ref('int_emis_code_map') }} as m on m.code_id = c.code_id
),

-- SystmOne: every current SRCode row the practice controls -----------------------------------
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
        cast('{{ run_started_at }}' as timestamptz) as applied_at,
        false as is_deleted,
        true as is_code_known
    from {{ ref('stg_tpp__srcode') }} as s
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
),

judged as (
    select
        c.*,
        not c.is_deleted
            and (not c.is_code_known or exists (
                select 1 from kept_concepts as k where k.snomed_concept_id = c.snomed_concept_id
            )) as is_kept
    from candidates as c
)

select
    j.supplier,
    j.practice_code,
    j.patient_id,
    k.person_key,
    j.observation_id,
    j.effective_date,
    j.entered_date,
    j.snomed_concept_id,
    j.source_code,
    j.term,
    j.value,
    j.unit,
    j.episode,
    j.is_confidential,
    j.applied_at,
    not j.is_kept as is_deleted
from judged as j
left join {{ ref('int_patient_keys') }} as k
    on k.supplier = j.supplier and k.practice_code = j.practice_code and k.patient_id = j.patient_id
where j.is_kept
{%- if is_incremental() %}
   -- a record that was kept before and is now deleted or no longer qualifies: its key is replaced
   -- by this tombstone, which the post-hook removes
   or exists (
       select 1 from {{ this }} as t
       where t.supplier = j.supplier and t.practice_code = j.practice_code and t.observation_id = j.observation_id
   )
{%- endif %}
