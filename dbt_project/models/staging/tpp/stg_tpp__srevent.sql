{#- Current state of each SystmOne event (SREvent: consultations and other contacts), one row per practice and RowIdentifier.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes.
    Shared-care rows are kept and flagged (is_shared_care); intermediate drops them. -#}
with

current_rows as (
    {{ tpp_current_rows('srevent') }}
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
        {{ tpp_bigint('idstaffmemberprofilerole') }}  as id_staff_member_profile_role,
        {{ tpp_text('textualeventdoneby') }}          as textual_event_done_by,
        {{ tpp_code('idorganisationdoneat') }}        as id_organisation_done_at,
        {{ tpp_bigint('idauthorisedby') }}            as id_authorised_by,
        {{ tpp_bigint('idprofileauthorisedby') }}     as id_profile_authorised_by,
        {{ tpp_text('contacteventlocation') }}        as contact_event_location,
        {{ tpp_text('contactmethod') }}               as contact_method,
        {{ tpp_bool('eventincomplete') }}             as event_incomplete,
        {{ tpp_bool('clinicalevent') }}               as clinical_event,
        {{ tpp_bigint('idreferralin') }}              as id_referral_in,
        {{ tpp_bigint('idpatient') }}                 as id_patient,
        {{ tpp_code('idorganisation') }}              as id_organisation,
        {{ tpp_bigint('idteam') }}                    as id_team,
        {{ tpp_bigint('idbranch') }}                  as id_branch,
        {{ tpp_code('idorganisationregisteredat') }}  as id_organisation_registered_at,
        ---------- lineage
        {{ tpp_lineage() }},
        {{ tpp_is_shared_care() }} as is_shared_care
    from current_rows
)

select * from renamed
