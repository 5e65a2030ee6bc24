{#- The patients each practice counts on its reference date (QOF list): registered on that date
    (macros/registration.sql), with their age in completed years and registration start date. Every
    register's list size and every register and indicator rule starts from here. -#}
select
    r.supplier,
    r.practice_code,
    r.patient_id,
    p.person_key,
    d.reference_date,
    {{ age_in_years('p.date_of_birth', 'd.reference_date') }} as age_years,
    r.start_date as registration_date
from {{ ref('int_registrations') }} as r
inner join {{ ref('int_patients') }} as p
    on p.supplier = r.supplier and p.practice_code = r.practice_code and p.patient_id = r.patient_id
inner join {{ ref('int_reference_dates') }} as d
    on d.supplier = r.supplier and d.practice_code = r.practice_code
where {{ im1_registered_on('r', 'p', 'd.reference_date') }}
