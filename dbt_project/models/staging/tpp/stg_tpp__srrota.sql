{#- Current state of each SystmOne rota (SRRota: appointment sessions), one row per practice and RowIdentifier.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes. -#}
with

current_rows as (
    {{ tpp_current_rows('srrota') }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}          as row_identifier,
        {{ tpp_code('idorganisationvisibleto') }}  as id_organisation_visible_to,
        {{ tpp_timestamp('datecreation') }}        as date_creation,
        {{ tpp_bigint('idprofilecreatedby') }}     as id_profile_created_by,
        {{ tpp_text('name') }}                     as name,
        {{ tpp_text('rotatype') }}                 as rota_type,
        {{ tpp_text('location') }}                 as location,
        {{ tpp_text('code') }}                     as code,
        {{ tpp_bigint('idprofileowner') }}         as id_profile_owner,
        {{ tpp_timestamp('datestart') }}           as date_start,
        {{ tpp_bool('allowoverbooking') }}         as allow_over_booking,
        {{ tpp_text('bookingcontactnumber') }}     as booking_contact_number,
        {{ tpp_bigint('idappointmentroom') }}      as id_appointment_room,
        {{ tpp_bigint('idbranch') }}               as id_branch,
        ---------- lineage
        {{ tpp_lineage() }},
        false as is_shared_care
    from current_rows
)

select * from renamed
