{#- The QOF population: one row per patient and reference date (ACHV_DAT) for every patient
    registered for GMS at the practice on that date (BR46-DM 3.2.1 "GMS registration status":
    REG_DAT <= ACHV_DAT and no deregistration, or a deregistration after ACHV_DAT; a death
    deregisters; dummy/test records and non-GMS (e.g. temporary) registrations are not counted;
    macros/registration.sql), with:

    - age_years: PAT_AGE, the age in full years on ACHV_DAT (BR46-DM 3.2.4);
    - registration_date: REG_DAT, the latest GMS registration date on or before ACHV_DAT (BR46-DM
      3.2.4). SystmOne sends the registration history, and two GMS registrations at the practice
      can overlap: the patient is still one row, and REG_DAT is the latest start among the
      registrations active on the date;
    - the QOF year's qualifying dates (pped, qssd) that every rule's window counts from.

    Every register, indicator and list size of the QOF marts starts from here. -#}
select
    r.supplier,
    r.practice_code,
    r.patient_id,
    max(p.person_key) as person_key,
    d.reference_date,
    d.reference_kind,
    d.qof_year,
    d.pped,
    d.qssd,
    {{ age_in_years('p.date_of_birth', 'd.reference_date') }} as age_years,
    max(r.start_date) as registration_date
from {{ ref('int_registrations') }} as r
inner join {{ ref('int_patients') }} as p
    on p.supplier = r.supplier and p.practice_code = r.practice_code and p.patient_id = r.patient_id
inner join {{ ref('int_qof_reference_dates') }} as d
    on d.supplier = r.supplier and d.practice_code = r.practice_code
where {{ im1_registered_on('r', 'p', 'd.reference_date') }}
group by r.supplier, r.practice_code, r.patient_id, d.reference_date, d.reference_kind, d.qof_year, d.pped, d.qssd,
         p.date_of_birth
