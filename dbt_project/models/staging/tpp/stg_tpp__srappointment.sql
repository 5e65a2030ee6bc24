{#- Current state of each SystmOne appointment (SRAppointment), one row per practice and RowIdentifier.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes.
    Shared-care rows are kept and flagged (is_shared_care); intermediate drops them. -#}
with

current_rows as (
    {{ tpp_current_rows('srappointment') }}
),

gms_organisations as (
    {{ tpp_gms_organisations() }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}                as row_identifier,
        {{ tpp_code('idorganisationvisibleto') }}        as id_organisation_visible_to,
        {{ tpp_timestamp('datestart') }}                 as date_start,
        {{ tpp_timestamp('dateend') }}                   as date_end,
        {{ tpp_bigint('appointmentstatus') }}            as appointment_status,
        {{ tpp_timestamp('dateappointmentbooked') }}     as date_appointment_booked,
        {{ tpp_timestamp('datepatientarrival') }}        as date_patient_arrival,
        {{ tpp_timestamp('datepatientseen') }}           as date_patient_seen,
        {{ tpp_bool('followupappointment') }}            as follow_up_appointment,
        {{ tpp_bool('telephoneappointment') }}           as telephone_appointment,
        {{ tpp_bigint('idclinician') }}                  as id_clinician,
        {{ tpp_bigint('idprofileclinician') }}           as id_profile_clinician,
        {{ tpp_text('rotaname') }}                       as rota_name,
        {{ tpp_text('rotatype') }}                       as rota_type,
        {{ tpp_text('rotalocation') }}                   as rota_location,
        {{ tpp_text('rotacode') }}                       as rota_code,
        {{ tpp_bigint('idrotaowner') }}                  as id_rota_owner,
        {{ tpp_bigint('idprofilerotaowner') }}           as id_profile_rota_owner,
        {{ tpp_bool('allowsoverbooking') }}              as allows_overbooking,
        {{ tpp_text('bookingcontactnumber') }}           as booking_contact_number,
        {{ tpp_timestamp('dateappointmentcancelled') }}  as date_appointment_cancelled,
        {{ tpp_bigint('idrota') }}                       as id_rota,
        {{ tpp_bigint('idreferralin') }}                 as id_referral_in,
        {{ tpp_bigint('idpatient') }}                    as id_patient,
        {{ tpp_code('idorganisation') }}                 as id_organisation,
        {{ tpp_code('idorganisationregisteredat') }}     as id_organisation_registered_at,
        ---------- lineage
        {{ tpp_lineage() }},
        {{ tpp_is_shared_care() }} as is_shared_care
    from current_rows
)

select * from renamed
