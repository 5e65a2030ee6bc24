{#- The organisations each SystmOne patient has (or had) a GMS registration at, per practice, from
    every SRPatientRegistration row of a ready batch (RegistrationStatus containing GMS, e.g.
    'GMS,Contraception'; both IDOrganisation and IDOrganisationRegisteredAt count), as Endeavour
    kept a cumulative map for its data-controller filter (im1-formats.md 3.8). It decides which
    staged rows are shared care (macros/staging.sql). -#}
select distinct
    reg._organisation as practice_code,
    {{ tpp_bigint('reg.idpatient') }} as id_patient,
    o.organisation
from {{ source('raw_tpp', 'srpatientregistration') }} as reg
inner join {{ ref('stg_ingest__batches_ready') }} as b on b.batch_id = reg._batch_id
cross join lateral (
    values ({{ tpp_code('reg.idorganisation') }}), ({{ tpp_code('reg.idorganisationregisteredat') }})
) as o (organisation)
where reg.registrationstatus like '%GMS%'
  and o.organisation is not null
  and nullif(trim(reg.idpatient), '') is not null
