{#- Problems (EMIS CareRecord_Problem, TPP SRProblem): an observation promoted to a problem, with its status,
    significance and end date. The problem's concept, term and start date come from its
    observation in int_observations, so they are filled for problems coded with a code-list
    concept (e.g. register diagnoses) and null for other problems (int_observations keeps only
    what the marts need; reading every observation here would scan the whole table each run). -#}
{#- Staging views rank rows with a window function, so the planner expects about one row from them
    and would pick nested loops over whole tables; this model reads whole tables, so hash joins. -#}
{{ config(pre_hook="set local enable_nestloop = off") }}
with

emis as (
    select
        'emis' as supplier,
        practice_code,
        patient_guid as patient_id,
        observation_guid as problem_id,
        parent_problem_observation_guid as parent_problem_id,
        problem_status_description as status,
        significance_description as significance,
        end_date,
        expected_duration as expected_duration_days,
        last_review_date
    from {{ ref('stg_emis__carerecord_problem') }}
),

-- SystmOne SRProblem: a problem refers to its coded entry (IDCode, an SRCode row); SystmOne sends
-- no status, significance, expected duration or review date: a problem with an end date is past,
-- else active. Shared-care rows are left out.
tpp as (
    select
        'tpp' as supplier,
        practice_code,
        cast(id_patient as text) as patient_id,
        cast(coalesce(id_code, row_identifier) as text) as problem_id,
        cast(null as text) as parent_problem_id,
        case when date_end is null then 'Active' else 'Past' end as status,
        cast(null as text) as significance,
        date_end as end_date,
        cast(null as integer) as expected_duration_days,
        cast(null as date) as last_review_date
    from {{ ref('stg_tpp__srproblem') }}
    where not is_shared_care
      and id_patient is not null
),

problems as (
    select * from emis
    union all
    select * from tpp
)

select
    p.supplier,
    p.practice_code,
    p.patient_id,
    k.person_key,
    p.problem_id,
    p.parent_problem_id,
    o.effective_date as start_date,
    p.end_date,
    o.snomed_concept_id,
    o.term,
    p.status,
    p.significance,
    p.expected_duration_days,
    p.last_review_date
from problems as p
left join {{ ref('int_patient_keys') }} as k
    on k.supplier = p.supplier and k.practice_code = p.practice_code and k.patient_id = p.patient_id
left join {{ ref('int_observations') }} as o
    on o.supplier = p.supplier and o.practice_code = p.practice_code and o.observation_id = p.problem_id
