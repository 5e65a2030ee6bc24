{#- Booked appointments (slots with a patient), one row per supplier, practice and appointment,
    with the GPAD status, mode, clinician HCP type and booking lead time (marts.md 4.5).
    Unbooked and blocked slots are not appointments and are left out; cancelled appointments stay
    with gpad_status NULL (GPAD does not count them).

    EMIS: Appointment_Slot; the clinician is the session's (int_appointment_sessions); the mode is
    the national mode itself (ModeOfContact), the context type and national slot category are on the
    slot. TPP: SRAppointment, status through SRMapping, the clinician's staff profile on the row; the
    mode is the slot type's appointment method, one of the appointment's flags (SRAppointmentFlags),
    else Telephone when TelephoneAppointment is set, else not recorded (Unknown); the IM1 extract
    carries no national slot category or context type. Shared-care rows (recorded by another
    organisation) are not the practice's and are left out.

    Every mapping is a seed (seeds/gpad, with provenance). Nothing unmapped is counted silently: an
    unmapped status is status_harmonised 'unmapped' and not counted (a DNA flag still makes it a
    DNA), an unmapped context type is 'Unmapped' and not counted, an unmapped mode is Unknown, an
    unmapped role Unknown; int_gpad_unmapped lists them all.

    Incremental (macros/README.md): each run re-derives the appointments whose slot (EMIS) or
    SRAppointment row (TPP) was applied since its last run, those of sessions whose clinician or
    HCP type changed, of SystmOne staff profiles whose HCP type changed, of SystmOne appointments
    whose flags (appointment method) changed, of a SystmOne practice
    whose SRMapping changed and of patients whose GMS registrations elsewhere changed; a deleted,
    un-booked or no longer qualifying appointment is removed. A change to a GPAD mapping seed
    (im1_gpad_mappings_fingerprint) rebuilds the model on its next run. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='im1_replace',
    unique_key=['supplier', 'practice_code', 'appointment_id'],
    on_schema_change='fail',
    indexes=[
        {'columns': ['supplier', 'practice_code', 'appointment_id'], 'unique': true},
        {'columns': ['supplier', 'practice_code', 'session_id']},
        {'columns': ['applied_at']},
    ],
    meta={'im1_incremental': {
        'fingerprint': 'im1_gpad_mappings_fingerprint',
        'sources': [
            {'ref': 'base_emis__appointment_slot', 'key': ["'emis'", 'practice_code', 'slot_guid']},
            {'ref': 'base_tpp__srappointment', 'key': ["'tpp'", 'practice_code', 'row_identifier']},
        ],
        'lookups': [
            {'name': 'im1_lookup_session_clinicians', 'key': ['supplier', 'practice_code', 'session_id'], 'via': 'this'},
            {'name': 'im1_lookup_tpp_practitioners', 'key': ['supplier', 'practice_code', 'practitioner_id'], 'via': 'this'},
            {'name': 'im1_lookup_tpp_appointment_flags', 'key': ['supplier', 'practice_code', 'appointment_id'], 'via': 'this'},
            {'name': 'im1_lookup_tpp_mappings', 'key': ['practice_code'], 'via': 'base_tpp__srappointment'},
            {'name': 'im1_lookup_tpp_gms_elsewhere', 'key': ['practice_code', 'id_patient'], 'via': 'base_tpp__srappointment'},
        ],
    }},
    pre_hook="{{ im1_incremental_begin() }}",
    post_hook="{{ im1_incremental_end() }}",
) }}
-- depends_on (read by the incremental hooks): {{ ref('base_tpp__srappointment') }}, {{ ref('stg_tpp__gms_organisations') }}

{%- set delta = im1_incremental() %}

with

status_map as (
    -- an empty gpad_status (not counted) is NULL however the seed was loaded
    select supplier, source_status, status_harmonised, nullif(gpad_status, '') as gpad_status
    from {{ ref('gpad_appointment_status_map') }}
),

mode_map as (
    select supplier, source_mode, national_mode, gpad_mode from {{ ref('gpad_appointment_mode_map') }}
),

context_map as (
    select source_context, gpad_context_type, is_gpad_counted from {{ ref('gpad_context_type_map') }}
),

sessions as (
    select supplier, practice_code, session_id, practitioner_id, hcp_type, hcp_role
    from {{ ref('int_appointment_sessions') }}
),

emis_slots as (
    select b.*
    from {{ ref('base_emis__appointment_slot') }} as b
    {%- if delta %}
    inner join {{ im1_touched() }} as k
        on k.supplier = 'emis' and k.practice_code = b.practice_code and k.appointment_id = b.slot_guid
    {%- endif %}
    where not b.is_deleted
      and b.patient_guid is not null
),

emis as (
    select
        'emis' as supplier,
        s.practice_code,
        s.slot_guid as appointment_id,
        s.patient_guid as patient_id,
        s.session_guid as session_id,
        se.practitioner_id,
        se.hcp_type,
        se.hcp_role,
        s.appointment_date,
        s.appointment_start_time,
        s.planned_duration_in_minutes as planned_duration_minutes,
        s.booked_date,
        s.slot_status as status_source,
        s.did_not_attend,
        s.mode_of_contact as mode_source,
        s.context_type,
        s.national_slot_category_name as national_slot_category,
        s.service_setting,
        s.applied_at
    from emis_slots as s
    left join sessions as se
        on se.supplier = 'emis' and se.practice_code = s.practice_code and se.session_id = s.session_guid
),

tpp_status as (
    select practice_code, row_identifier, mapping
    from {{ ref('stg_tpp__srmapping') }}
),

tpp_practitioners as (
    select practice_code, practitioner_id, hcp_type, hcp_role
    from {{ ref('int_practitioners') }}
    where supplier = 'tpp'
),

tpp_methods as (
    -- the appointment method among the appointment's flags (one per slot type; the first if several)
    select f.practice_code, f.id_appointment, min(f.flag) as method
    from {{ ref('stg_tpp__srappointmentflags') }} as f
    inner join mode_map as m on m.supplier = 'tpp' and m.source_mode = f.flag
    group by f.practice_code, f.id_appointment
),

tpp as (
    select
        'tpp' as supplier,
        a.practice_code,
        cast(a.row_identifier as text) as appointment_id,
        cast(a.id_patient as text) as patient_id,
        cast(a.id_rota as text) as session_id,
        cast(a.id_profile_clinician as text) as practitioner_id,
        p.hcp_type,
        p.hcp_role,
        cast(a.date_start as date) as appointment_date,
        cast(a.date_start as time) as appointment_start_time,
        cast(extract(epoch from (a.date_end - a.date_start)) / 60 as bigint) as planned_duration_minutes,
        cast(a.date_appointment_booked as date) as booked_date,
        m.mapping as status_source,
        false as did_not_attend,
        coalesce(fm.method, case when a.telephone_appointment then 'Telephone' end) as mode_source,
        cast(null as text) as context_type,
        cast(null as text) as national_slot_category,
        cast(null as text) as service_setting,
        a.applied_at
    from {{ ref('stg_tpp__srappointment') }} as a
    {%- if delta %}
    inner join {{ im1_touched() }} as k
        on k.supplier = 'tpp' and k.practice_code = a.practice_code
       and a.row_identifier = {{ im1_touched_key('k', 'appointment_id', 'bigint', 'tpp') }}
    {%- endif %}
    left join tpp_status as m on m.practice_code = a.practice_code and m.row_identifier = a.appointment_status
    left join tpp_methods as fm on fm.practice_code = a.practice_code and fm.id_appointment = a.row_identifier
    left join tpp_practitioners as p
        on p.practice_code = a.practice_code and p.practitioner_id = cast(a.id_profile_clinician as text)
    where not a.is_shared_care
      and a.id_patient is not null
      and a.date_start is not null
),

appointments as (
    select * from emis
    union all
    select * from tpp
),

mapped as (
    select
        a.*,
        -- the slot's DNA flag (EMIS DidNotAttend) is the outcome when the status says no more than
        -- "booked" or is not mapped: a slot still "Booked" but flagged DNA was not attended (GPAD-SI)
        case
            when a.did_not_attend and coalesce(m.status_harmonised, 'booked') = 'booked' then 'dna'
            when m.source_status is not null then m.status_harmonised
            else 'unmapped'
        end as status_harmonised,
        case
            when a.did_not_attend and coalesce(m.status_harmonised, 'booked') = 'booked' then 'DNA'
            when m.source_status is not null then m.gpad_status
        end as gpad_status,
        mm.national_mode,
        coalesce(mm.gpad_mode, 'Unknown') as gpad_mode,
        case when a.context_type is not null then coalesce(cm.gpad_context_type, 'Unmapped') end as gpad_context_type,
        -- no context type (EMIS before v8.2, SystmOne): counted; a listed one as the seed says; an unmapped one not
        a.context_type is null or coalesce(cm.is_gpad_counted, false) as is_context_counted,
        a.appointment_date - a.booked_date as lead_time_days
    from appointments as a
    left join status_map as m on m.supplier = a.supplier and m.source_status = a.status_source
    left join mode_map as mm on mm.supplier = a.supplier and mm.source_mode = a.mode_source
    left join context_map as cm on cm.source_context = a.context_type
)

select
    supplier,
    practice_code,
    appointment_id,
    patient_id,
    session_id,
    practitioner_id,
    appointment_date,
    cast(date_trunc('month', appointment_date) as date) as appointment_month,
    appointment_start_time,
    planned_duration_minutes,
    booked_date,
    lead_time_days,
    {{ gpad_lead_time_band('lead_time_days') }} as lead_time_band,
    status_source,
    status_harmonised,
    gpad_status,
    mode_source,
    national_mode,
    gpad_mode,
    coalesce(hcp_type, 'Unknown') as hcp_type,
    coalesce(hcp_role, 'Unknown') as hcp_role,
    context_type,
    gpad_context_type,
    national_slot_category,
    service_setting,
    -- GPAD counts attended, DNA and unknown-outcome appointments in Care Related Encounter slots
    -- (gpad_context_type_map; no context type recorded: counted)
    gpad_status is not null and is_context_counted as is_gpad_counted,
    applied_at
from mapped
