{#- Registration periods at a practice. EMIS sends only the current registration of each patient
    record (Admin_Patient: DateOfRegistration, DateofDeactivation, PatientTypeDescription), so
    there is one period per patient; earlier periods at the same practice are not in the extract.
    SystmOne sends the registration history (SRPatientRegistration), so a TPP patient may have
    several periods.
    Active on date D: start_date <= D and (end_date is null or end_date > D). -#}
{#- Staging views rank rows with a window function, so the planner expects about one row from them
    and would pick nested loops over whole tables; this model reads whole tables, so hash joins. -#}
{{ config(pre_hook="set local enable_nestloop = off") }}
with

emis as (
    select
        'emis' as supplier,
        practice_code,
        patient_guid as patient_id,
        patient_type_description as registration_type,
        date_of_registration as start_date,
        date_of_deactivation as end_date
    from {{ ref('stg_emis__admin_patient') }}
    where date_of_registration is not null
),

-- SystmOne SRPatientRegistration holds every registration of the patient, at this practice and
-- elsewhere: the practice's own are those whose IDOrganisation is the practice (a community
-- service's registration visible to the practice is not a practice registration). A GMS
-- registration (RegistrationStatus 'GMS', possibly with extra services: 'GMS,Contraception') is
-- Regular as EMIS calls it; any other status (e.g. Temporary) keeps its SystmOne name.
tpp as (
    select
        'tpp' as supplier,
        practice_code,
        cast(id_patient as text) as patient_id,
        case when registration_status like '%GMS%' then 'Regular' else registration_status end
            as registration_type,
        date_registration as start_date,
        date_de_registration as end_date
    from {{ ref('stg_tpp__srpatientregistration') }}
    where date_registration is not null
      and id_patient is not null
      and id_organisation = practice_code
      and not is_shared_care
),

registrations as (
    select * from emis
    union all
    select * from tpp
)

select
    r.supplier,
    r.practice_code,
    r.patient_id,
    k.person_key,
    r.registration_type,
    r.start_date,
    r.end_date
from registrations as r
left join {{ ref('int_patient_keys') }} as k
    on k.supplier = r.supplier and k.practice_code = r.practice_code and k.patient_id = r.patient_id
