{#- Current state of each SystmOne repeat prescription template (SRRepeatTemplate), one row per practice and RowIdentifier.
    The current row per (IDOrganisationVisibleTo, RowIdentifier) comes from tpp_current_rows: a full
    file supersedes earlier rows, the latest row in extract order wins, RemovedData = 1 deletes.
    Shared-care rows are kept and flagged (is_shared_care); intermediate drops them. -#}
with

current_rows as (
    {{ tpp_current_rows('srrepeattemplate') }}
),

gms_organisations as (
    {{ tpp_gms_organisations() }}
),

renamed as (
    select
        {{ tpp_bigint('rowidentifier') }}               as row_identifier,
        {{ tpp_code('idorganisationvisibleto') }}       as id_organisation_visible_to,
        {{ tpp_timestamp('dateeventrecorded') }}        as date_event_recorded,
        {{ tpp_timestamp('dateevent') }}                as date_event,
        {{ tpp_bigint('idprofileenteredby') }}          as id_profile_entered_by,
        {{ tpp_bigint('iddoneby') }}                    as id_done_by,
        {{ tpp_text('textualeventdoneby') }}            as textual_event_done_by,
        {{ tpp_code('idorganisationdoneat') }}          as id_organisation_done_at,
        {{ tpp_bigint('idmultilexproduct') }}           as id_multi_lex_product,
        {{ tpp_bigint('idmultilexpack') }}              as id_multi_lex_pack,
        {{ tpp_bigint('idmultilexdmd') }}               as id_multi_lex_dmd,
        {{ tpp_text('nameofmedication') }}              as name_of_medication,
        {{ tpp_date('datemedicationtemplatestart') }}   as date_medication_template_start,
        {{ tpp_date('datemedicationtemplateend') }}     as date_medication_template_end,
        {{ tpp_date('datemedicationtemplatereview') }}  as date_medication_template_review,
        {{ tpp_text('medicationdosage') }}              as medication_dosage,
        {{ tpp_text('medicationquantity') }}            as medication_quantity,
        {{ tpp_int('maxissues') }}                      as max_issues,
        {{ tpp_int('courselengthperissue') }}           as course_length_per_issue,
        {{ tpp_text('drugstatus') }}                    as drug_status,
        {{ tpp_bigint('idreferralin') }}                as id_referral_in,
        {{ tpp_bigint('idevent') }}                     as id_event,
        {{ tpp_bigint('idpatient') }}                   as id_patient,
        {{ tpp_code('idorganisation') }}                as id_organisation,
        {{ tpp_code('idorganisationregisteredat') }}    as id_organisation_registered_at,
        ---------- lineage
        {{ tpp_lineage() }},
        {{ tpp_is_shared_care() }} as is_shared_care
    from current_rows
)

select * from renamed
