{#- Current state of each SystmOne coded entry (SRCode: observations, diagnoses, values), one row per practice and RowIdentifier.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes.
    Shared-care rows are kept and flagged (is_shared_care); intermediate drops them. -#}
with

current_rows as (
    {{ tpp_current_rows('srcode') }}
),

gms_organisations as (
    {{ tpp_gms_organisations() }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}             as row_identifier,
        {{ tpp_code('idorganisationvisibleto') }}     as id_organisation_visible_to,
        {{ tpp_timestamp('dateeventrecorded') }}      as date_event_recorded,
        {{ tpp_timestamp('dateevent') }}              as date_event,
        {{ tpp_bigint('idprofileenteredby') }}        as id_profile_entered_by,
        {{ tpp_bigint('iddoneby') }}                  as id_done_by,
        {{ tpp_text('textualeventdoneby') }}          as textual_event_done_by,
        {{ tpp_code('idorganisationdoneat') }}        as id_organisation_done_at,
        {{ tpp_text('ctv3code') }}                    as ctv3_code,
        {{ tpp_text('ctv3text') }}                    as ctv3_text,
        {{ tpp_text('snomedcode') }}                  as snomed_code,
        {{ tpp_text('snomedtext') }}                  as snomed_text,
        {{ tpp_text('numericcomparator') }}           as numeric_comparator,
        {{ tpp_bool('isnumeric') }}                   as is_numeric,
        {{ tpp_numeric('numericvalue') }}             as numeric_value,
        {{ tpp_text('numericunit') }}                 as numeric_unit,
        {{ tpp_text('episodetype') }}                 as episode_type,
        {{ tpp_bigint('idtemplate') }}                as id_template,
        {{ tpp_bigint('idquestionnaire') }}           as id_questionnaire,
        {{ tpp_bigint('idevent') }}                   as id_event,
        {{ tpp_bigint('idpatient') }}                 as id_patient,
        {{ tpp_bigint('idreferralin') }}              as id_referral_in,
        {{ tpp_bigint('idappointment') }}             as id_appointment,
        {{ tpp_bigint('idvisit') }}                   as id_visit,
        {{ tpp_code('idorganisation') }}              as id_organisation,
        {{ tpp_code('idorganisationregisteredat') }}  as id_organisation_registered_at,
        ---------- lineage
        {{ tpp_lineage() }},
        {{ tpp_is_shared_care() }} as is_shared_care
    from current_rows
)

select * from renamed
