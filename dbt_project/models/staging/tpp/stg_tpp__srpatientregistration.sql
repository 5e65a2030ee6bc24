{#- Current state of each SystmOne registration (SRPatientRegistration: GP and other registrations of a patient), one row per practice and RowIdentifier.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes.
    Shared-care rows are kept and flagged (is_shared_care); intermediate drops them. -#}
with

current_rows as (
    {{ tpp_current_rows('srpatientregistration') }}
),

gms_organisations as (
    {{ tpp_gms_organisations() }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}             as row_identifier,
        {{ tpp_code('idorganisationvisibleto') }}     as id_organisation_visible_to,
        {{ tpp_timestamp('dateeventrecorded') }}      as date_event_recorded,
        {{ tpp_bigint('idprofileenteredby') }}        as id_profile_entered_by,
        {{ tpp_date('dateregistration') }}            as date_registration,
        {{ tpp_date('datederegistration') }}          as date_de_registration,
        {{ tpp_text('registrationstatus') }}          as registration_status,
        {{ tpp_text('preferredpharmacy') }}           as preferred_pharmacy,
        {{ tpp_bigint('idpatient') }}                 as id_patient,
        {{ tpp_code('idorganisation') }}              as id_organisation,
        {{ tpp_code('idorganisationregisteredat') }}  as id_organisation_registered_at,
        ---------- lineage
        {{ tpp_lineage() }},
        {{ tpp_is_shared_care() }} as is_shared_care
    from current_rows
)

select * from renamed
