{#- Lookups of the incremental intermediate models (macros/README.md): each selects the key columns
    its declaration names, with the column names of the relation it is matched against (``via``),
    and ``value``, what the model reads from it. A changed value re-derives the model's rows with
    that key. -#}

{#- Each EMIS appointment session's clinician and HCP type (int_appointments, via its session_id). -#}
{% macro im1_lookup_session_clinicians() -%}
    select supplier, practice_code, session_id, json_build_array(practitioner_id, hcp_type, hcp_role)::text as value
    from {{ ref('int_appointment_sessions') }}
{%- endmacro %}

{#- Each SystmOne staff profile's HCP type (int_appointments, via its practitioner_id). -#}
{% macro im1_lookup_tpp_practitioners() -%}
    select supplier, practice_code, practitioner_id, json_build_array(hcp_type, hcp_role)::text as value
    from {{ ref('int_practitioners') }}
    where supplier = 'tpp'
{%- endmacro %}

{#- Each drug code's dm+d code and name (int_medication_issues and _authorisations, via source_code):
    e.g. the Coding_DrugCode row arrived after the record. -#}
{% macro im1_lookup_drug_codes() -%}
    select supplier, source_code, json_build_array(dmd_code, drug_name)::text as value
    from {{ ref('int_drug_codes') }}
{%- endmacro %}

{#- A SystmOne practice's SRMapping (the episode types and appointment statuses its rows carry as
    ids), one value per practice: mappings rarely change, and when one does every TPP row of the
    practice is re-derived. -#}
{% macro im1_lookup_tpp_mappings() -%}
    select practice_code, md5(string_agg(json_build_array(row_identifier, mapping)::text, ',' order by row_identifier)) as value
    from {{ ref('stg_tpp__srmapping') }}
    group by practice_code
{%- endmacro %}

{#- The organisations other than the practice where each SystmOne patient has a GMS registration,
    for patients who have one: what decides whether a row recorded elsewhere is shared care
    (macros/staging.sql). A patient with the practice's own registration only is not listed, so a
    new patient re-derives nothing. Matched on (practice_code, id_patient) of the base model. -#}
{% macro im1_lookup_tpp_gms_elsewhere() -%}
    select practice_code, id_patient, string_agg(organisation, ',' order by organisation) as value
    from {{ ref('stg_tpp__gms_organisations') }}
    where organisation <> practice_code
    group by practice_code, id_patient
{%- endmacro %}

{#- Each SystmOne appointment's flags (its appointment method is one of them: int_appointments'
    mode), matched on (supplier, practice_code, appointment_id) of the model. -#}
{% macro im1_lookup_tpp_appointment_flags() -%}
    select 'tpp' as supplier, practice_code, cast(id_appointment as text) as appointment_id,
           string_agg(flag, ',' order by flag) as value
    from {{ ref('stg_tpp__srappointmentflags') }}
    group by practice_code, id_appointment
{%- endmacro %}
