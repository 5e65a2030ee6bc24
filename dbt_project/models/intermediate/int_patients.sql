{#- One row per patient record at a practice (supplier, practice_code, patient_id), pseudonymised:
    person_key instead of the NHS number, no names or addresses. Sex uses the labels of the
    ground truth and PRGP (male, female, indeterminate, unknown). has_type1_opt_out: the latest
    type 1 opt-out code is a dissent (on the same day a dissent wins over a withdrawal).
    EMIS: Admin_Patient. TPP: SRPatient. -#}
{#- Staging views rank rows with a window function, so the planner expects about one row from them
    and would pick nested loops over whole tables; this model reads whole tables, so hash joins. -#}
{{ config(pre_hook="set local enable_nestloop = off") }}
with

emis as (
    select
        'emis' as supplier,
        practice_code,
        patient_guid as patient_id,
        case upper(sex) when 'M' then 'male' when 'F' then 'female' when 'I' then 'indeterminate'
            else 'unknown' end as sex,
        date_of_birth,
        date_of_death,
        coalesce(dummy_type, false) or coalesce(patient_type_description = 'Dummy', false) as is_dummy,
        coalesce(spine_sensitive, false) as is_spine_sensitive,
        coalesce(is_confidential, false) as is_confidential
    from {{ ref('stg_emis__admin_patient') }}
),

-- SystmOne SRPatient: Gender M/F/I/U as EMIS; TestPatient marks a dummy record. SystmOne sends no
-- Spine-sensitive or confidential flag on the patient.
tpp as (
    select
        'tpp' as supplier,
        practice_code,
        cast(row_identifier as text) as patient_id,
        case upper(gender) when 'M' then 'male' when 'F' then 'female' when 'I' then 'indeterminate'
            else 'unknown' end as sex,
        cast(date_birth as date) as date_of_birth,
        date_death as date_of_death,
        coalesce(test_patient, false) as is_dummy,
        false as is_spine_sensitive,
        false as is_confidential
    from {{ ref('stg_tpp__srpatient') }}
    where row_identifier is not null
),

patients as (
    select * from emis
    union all
    select * from tpp
),

type1_events as (
    select
        o.supplier,
        o.practice_code,
        o.patient_id,
        r.event,
        o.effective_date
    from {{ ref('int_observations') }} as o
    inner join {{ ref('opt_out_code_roles') }} as r on cast(r.code as bigint) = o.snomed_concept_id
    where r.opt_out_type = 'type1'
),

type1_latest as (
    select distinct on (supplier, practice_code, patient_id)
        supplier, practice_code, patient_id, event
    from type1_events
    order by supplier, practice_code, patient_id, effective_date desc nulls last, (event = 'dissent') desc
)

select
    p.supplier,
    p.practice_code,
    p.patient_id,
    k.person_key,
    p.sex,
    p.date_of_birth,
    p.date_of_death,
    p.is_dummy,
    p.is_spine_sensitive,
    p.is_confidential,
    coalesce(t.event = 'dissent', false) as has_type1_opt_out
from patients as p
left join {{ ref('int_patient_keys') }} as k
    on k.supplier = p.supplier and k.practice_code = p.practice_code and k.patient_id = p.patient_id
left join type1_latest as t
    on t.supplier = p.supplier and t.practice_code = p.practice_code and t.patient_id = p.patient_id
