{#- Current state of each SystmOne patient (SRPatient), one row per practice and RowIdentifier. Holds names and the NHS number: staging is not readable by BI.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes. -#}
with

current_rows as (
    {{ tpp_current_rows('srpatient') }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}          as row_identifier,
        {{ tpp_code('idorganisationvisibleto') }}  as id_organisation_visible_to,
        {{ tpp_text('title') }}                    as title,
        {{ tpp_text('firstname') }}                as first_name,
        {{ tpp_text('middlenames') }}              as middle_names,
        {{ tpp_text('surname') }}                  as surname,
        {{ tpp_text('previoussurname') }}          as previous_surname,
        {{ tpp_text('nhsnumber') }}                as nhs_number,
        {{ tpp_timestamp('datebirth') }}           as date_birth,
        {{ tpp_date('datedeath') }}                as date_death,
        {{ tpp_text('birthplace') }}               as birth_place,
        {{ tpp_text('gender') }}                   as gender,
        {{ tpp_text('speaksenglish') }}            as speaks_english,
        {{ tpp_text('emailaddress') }}             as email_address,
        {{ tpp_bool('testpatient') }}              as test_patient,
        {{ tpp_text('ssref') }}                    as ss_ref,
        {{ tpp_bool('spinematched') }}             as spine_matched,
        ---------- lineage
        {{ tpp_lineage() }},
        false as is_shared_care
    from current_rows
)

select * from renamed
